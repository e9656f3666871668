"""Jobs in the store: every fenced transition of a leased job (claim, heartbeat, succeed, finish, fail,
release, sweep) and the reads of one job or of all of them.

Reached as `ForgeStore.jobs`; it shares the store's connection pool. Workers anywhere share the queue
through it: claims use SKIP LOCKED, every change to a leased job is fenced by its lease token, and
expired leases come back without an operator. The SQL of every transition is in job_sql.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forge_dagster.core.models import AcceptedOutput, JobState
from forge_dagster.core.store import db, job_read_sql, job_sql, operator_sql
from forge_dagster.core.store.outbox_store import OutboxRepository
from forge_dagster.core.store.types import ClaimedJob, LeaseLost, OutboxMessage, SweepReport
from forge_dagster.core.store.vector_store import write_output_vectors


def backoff_delay(attempt: int, *, base_s: float = 2.0, cap_s: float = 300.0) -> float:
    """Exponential backoff with full jitter for the retry after `attempt` (1-based)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** max(0, attempt - 1)))


def pin_keys(pins: Sequence[tuple[str, str]] | None) -> list[str] | None:
    """(processor, version) pairs as the claim's "name version" keys (names and versions hold no space)."""
    return None if pins is None else [f"{name} {version}" for name, version in pins]


class JobRepository:
    def __init__(self, pool, owner: str, lease_ttl_s: float, outbox: OutboxRepository) -> None:
        self._pool, self.owner, self.lease_ttl_s, self._outbox = pool, owner, lease_ttl_s, outbox

    # -- leases ----------------------------------------------------------------------------------
    def claim(
        self, k: int, *, mode: str = "realtime", to_state: str = JobState.RUNNING, ttl_s: float | None = None,
        owner: str | None = None, pins: Sequence[tuple[str, str]] | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to k jobs of `mode` in one statement (of the (processor, version) `pins` only, when
        given); each gets a new lease token."""
        params = {"k": k, "mode": mode, "to_state": str(to_state), "owner": owner or self.owner,
                  "ttl": ttl_s or self.lease_ttl_s, "pins": pin_keys(pins)}
        with db.one_statement(self._pool) as conn:
            rows = conn.execute(job_sql.CLAIM_JOBS, params).fetchall()
        return [ClaimedJob(*row, state=str(to_state)) for row in rows]

    def heartbeat(self, jobs: Sequence[ClaimedJob], *, ttl_s: float | None = None) -> set[int]:
        """Extend the leases; return the ids still held. The others were taken over or finished: their
        `lease_lost` is set, so whoever works on them stops."""
        if not jobs:
            return set()
        params = {"ids": [j.id for j in jobs], "tokens": [j.lease_token for j in jobs],
                  "ttl": ttl_s or self.lease_ttl_s}
        with db.one_statement(self._pool) as conn:
            held = {row[0] for row in conn.execute(job_sql.HEARTBEAT_JOBS, params)}
        for job in jobs:
            if job.id not in held:
                job.lease_lost.set()
        return held

    # -- endings ---------------------------------------------------------------------------------
    def succeed_many(
        self, items: Sequence[tuple[ClaimedJob, AcceptedOutput]], *, reason: str = "validated",
        conn: psycopg.Connection | None = None,
    ) -> set[int]:
        """Succeed leased jobs with their accepted outputs (and nothing else: fail closed); return the ids
        that were still held. A job pinned to another processor version than its output was validated
        against is not succeeded."""
        if not items:
            return set()
        for _, accepted in items:
            if not isinstance(accepted, AcceptedOutput):
                raise TypeError(f"a job succeeds only with an AcceptedOutput, got {type(accepted).__name__}")
        states = {job.state for job, _ in items}
        finished: set[int] = set()
        vectors = any(a.vector is not None for _, a in items)
        with db.use(self._pool, conn, statements=len(states) + vectors) as c:
            for from_state in states:
                chunk = [(job, a) for job, a in items if job.state == from_state]
                params = {
                    "ids": [j.id for j, _ in chunk], "tokens": [j.lease_token for j, _ in chunk],
                    "outputs": [Jsonb(a.output) for _, a in chunk],
                    "processors": [a.processor for _, a in chunk], "versions": [a.processor_version for _, a in chunk],
                    "fingerprints": [a.fingerprint for _, a in chunk], "accepted_by": [a.accepted_by for _, a in chunk],
                    "reason": reason, "from_state": from_state, "actor": self.owner,
                }
                finished |= {row[0] for row in c.execute(job_sql.SUCCEED_JOBS, params)}
            write_output_vectors(c, [(job.id, a) for job, a in items if job.id in finished])
        return finished

    def finish_many(
        self, items: Sequence[ClaimedJob], *, to_state: str, reason: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> set[int]:
        """Move leased jobs to a terminal state other than succeeded (invalid, failed) with `reason`; return
        the ids that were still held. Success goes through `succeed_many` with accepted outputs."""
        if to_state not in (JobState.INVALID, JobState.FAILED):
            raise ValueError(f"finish_many ends jobs invalid or failed, not {to_state} (succeed_many succeeds)")
        if not items:
            return set()
        states = {job.state for job in items}
        finished: set[int] = set()
        with db.use(self._pool, conn, statements=len(states)) as c:
            for from_state in states:
                chunk = [job for job in items if job.state == from_state]
                params = {
                    "ids": [j.id for j in chunk], "tokens": [j.lease_token for j in chunk],
                    "reasons": [reason] * len(chunk),
                    "to_state": str(to_state), "from_state": from_state, "actor": self.owner,
                }
                finished |= {row[0] for row in c.execute(job_sql.FINISH_JOBS, params)}
        return finished

    def complete(
        self, job: ClaimedJob, accepted: AcceptedOutput, *, outbox: Iterable[OutboxMessage] = (),
        conn: psycopg.Connection | None = None,
    ) -> None:
        """Succeed one leased job with its accepted output, writing `outbox` rows in the same transaction.
        Raises LeaseLost."""
        with db.use(self._pool, conn) as c:
            if not self.succeed_many([(job, accepted)], conn=c):
                raise LeaseLost(f"job {job.id}: lease {job.lease_token} no longer held")
            self._outbox.write(outbox, conn=c)

    def fail_many(
        self, items: Sequence[tuple[ClaimedJob, str, bool]], *, conn: psycopg.Connection | None = None,
        base_delay_s: float = 2.0,
    ) -> dict[int, str]:
        """Record failures (job, reason, retryable): retryable ones go back to pending with backoff until
        max_attempts, then dead; the others fail. Returns {job id: new state} for jobs still held."""
        result: dict[int, str] = {}
        from_states = {job.state for job, _, _ in items}
        with db.use(self._pool, conn, statements=len(from_states)) as c:
            for from_state in from_states:
                chunk = [it for it in items if it[0].state == from_state]
                params = {
                    "ids": [j.id for j, _, _ in chunk], "tokens": [j.lease_token for j, _, _ in chunk],
                    "reasons": [r for _, r, _ in chunk], "retryable": [bool(rt) for _, _, rt in chunk],
                    "delays": [backoff_delay(j.attempt, base_s=base_delay_s) for j, _, _ in chunk],
                    "from_state": from_state, "actor": self.owner,
                }
                result.update({row[0]: row[1] for row in c.execute(job_sql.FAIL_JOBS, params)})
        return result

    def fail(
        self, job: ClaimedJob, reason: str, *, retryable: bool = True, outbox: Iterable[OutboxMessage] = (),
        conn: psycopg.Connection | None = None, base_delay_s: float = 2.0,
    ) -> str:
        """Record one failure; return the job's new state. Raises LeaseLost."""
        with db.use(self._pool, conn) as c:
            states = self.fail_many([(job, reason, retryable)], conn=c, base_delay_s=base_delay_s)
            if job.id not in states:
                raise LeaseLost(f"job {job.id}: lease {job.lease_token} no longer held")
            self._outbox.write(outbox, conn=c)
            return states[job.id]

    def release(self, items: Sequence[tuple[ClaimedJob, str, float]], *, conn: psycopg.Connection | None = None
                ) -> set[int]:
        """Return leased jobs (job, reason, delay_s) to pending without spending their attempt (the provider
        never ran them: every key paused, a budget held them, the worker stopping); returns the ids that were
        still held."""
        if not items:
            return set()
        released: set[int] = set()
        states = {job.state for job, _, _ in items}
        with db.use(self._pool, conn, statements=len(states)) as c:
            for from_state in states:
                chunk = [it for it in items if it[0].state == from_state]
                params = {"ids": [j.id for j, _, _ in chunk], "tokens": [j.lease_token for j, _, _ in chunk],
                          "reasons": [r[:500] for _, r, _ in chunk], "delays": [float(d) for _, _, d in chunk],
                          "from_state": from_state, "actor": self.owner}
                released |= {row[0] for row in c.execute(job_sql.RELEASE_JOBS, params)}
        return released

    def sweep_expired(
        self, *, limit: int = 1000,
        notices: Callable[[list[tuple[int, str, str]]], Iterable[OutboxMessage]] | None = None,
    ) -> SweepReport:
        """Free expired leases: back to pending, or dead when the attempts are spent. `notices` builds the
        outbox messages for the swept (job id, state, reason) rows, written in the sweep's own transaction."""
        with self._pool.connection() as conn:
            rows = conn.execute(job_sql.SWEEP_EXPIRED_LEASES, {"limit": limit, "actor": "sweeper"}).fetchall()
            if notices is not None:
                self._outbox.write(notices(rows), conn=conn)
        dead = sum(1 for _, state, _ in rows if state == JobState.DEAD)
        return SweepReport(requeued=len(rows) - dead, dead=dead)

    # -- operator actions ------------------------------------------------------------------------
    def cancel(self, ids: Sequence[int], *, reason: str, actor: str, selector: Mapping[str, Any]) -> dict[int, str]:
        """Cancel the open jobs among `ids` (terminal `cancelled`, lease cleared: a worker's late write is
        refused) and record the operator's action, in one transaction. Returns {job id: state it left}."""
        return self._operator_move(job_sql.CANCEL_JOBS, "cancel", ids, {"reason": reason, "actor": actor},
                                   selector)

    def retry(self, ids: Sequence[int], *, reason: str, actor: str, selector: Mapping[str, Any],
              version: str | None = None, mode: str | None = None, budget: int | None = None) -> dict[int, str]:
        """Send the jobs among `ids` that ended without success back to pending with a fresh attempt budget
        (pinned to `version` and `mode` when given) and record the operator's action, in one transaction.
        Returns {job id: state it left}."""
        params = {"reason": reason, "actor": actor, "version": version, "mode": mode, "budget": budget}
        return self._operator_move(job_sql.RETRY_JOBS, "retry", ids, params, selector)

    def _operator_move(self, query: str, action: str, ids: Sequence[int], params: dict[str, Any],
                       selector: Mapping[str, Any]) -> dict[int, str]:
        with self._pool.connection() as conn:
            moved = {job_id: state for job_id, state in conn.execute(query, {**params, "ids": list(ids)})}
            skipped = [{"job": job_id, "why": "its state changed before the action reached it"}
                       for job_id in ids if job_id not in moved]
            conn.execute(operator_sql.RECORD_ACTION, {
                "action": action, "actor": params["actor"], "reason": params["reason"],
                "selector": Jsonb(dict(selector)), "changed": len(moved), "skipped": Jsonb(skipped)})
        return moved

    def operator_actions(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest operator actions, newest first."""
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(operator_sql.RECENT_ACTIONS, {"limit": limit}).fetchall()

    # -- reading ---------------------------------------------------------------------------------
    def page(self, *, states: Sequence[str] | None = None, processor: str | None = None,
             batch_id: int | None = None, since: datetime | None = None, before: int | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
        """A page of jobs, newest first; the next page starts `before` the last id of this one."""
        params = {"states": list(states) if states else None, "processor": processor, "batch_id": batch_id,
                  "since": since, "before": before, "limit": limit}
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(job_read_sql.LIST_JOBS, params).fetchall()

    def select_ids(self, *, states: Sequence[str], processor: str | None = None, since: datetime | None = None,
                   limit: int = 100_000) -> list[int]:
        """Ids of the jobs a filter selects, oldest first."""
        params = {"states": list(states), "processor": processor, "since": since, "limit": limit}
        with self._pool.connection() as conn:
            return [r[0] for r in conn.execute(job_read_sql.SELECT_IDS, params)]

    def by_external_ids(self, external_ids: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
        """{intake id: [(job id, source), ...]} of the jobs whose intake id is among `external_ids` (any source)."""
        found: dict[str, list[tuple[int, str]]] = {}
        with self._pool.connection() as conn:
            for external_id, job_id, source in conn.execute(job_read_sql.BY_EXTERNAL_IDS,
                                                            {"external_ids": list(external_ids)}):
                found.setdefault(external_id, []).append((job_id, source))
        return found

    def by_intake_ids(self, source: str, external_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """{intake id: (job id, processor)} of the jobs `source` holds under `external_ids` (hot or archived)."""
        params = {"source": source, "external_ids": list(external_ids)}
        with self._pool.connection() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute(job_read_sql.BY_INTAKE_IDS, params)}

    def outcomes(self, *, ids: Sequence[int] | None = None, processor: str | None = None) -> list[dict[str, Any]]:
        """What became of the jobs among `ids`, or of every job of `processor` (hot or archived), oldest
        first: id, external_id, processor, processor_version, state, reason, output, cost_usd."""
        query, params = ((job_read_sql.OUTCOMES_OF, {"ids": list(ids)}) if ids is not None
                         else (job_read_sql.OUTCOMES_OF_PROCESSOR, {"processor": processor}))
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()

    def states(self, ids: Sequence[int]) -> dict[int, str]:
        """{job id: state} of the jobs among `ids` that exist (in the hot table)."""
        with self._pool.connection() as conn:
            return {r[0]: r[1] for r in conn.execute(job_read_sql.STATES_OF, {"ids": list(ids)})}

    def processors_and_modes(self, ids: Sequence[int]) -> set[tuple[str, str | None]]:
        """The (processor, mode) pairs of the jobs among `ids`."""
        with self._pool.connection() as conn:
            return {tuple(r) for r in conn.execute(job_read_sql.PROCESSORS_AND_MODES_OF, {"ids": list(ids)})}

    def story(self, job_id: int) -> dict[str, list[dict[str, Any]]]:
        """What happened to a job beside its row: events, collected provider answers, ledger rows and
        accepted outputs, each oldest first."""
        queries = {"events": job_read_sql.JOB_EVENTS, "results": job_read_sql.JOB_RESULTS,
                   "costs": job_read_sql.JOB_COSTS, "accepted": job_read_sql.JOB_ACCEPTED}
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return {name: cur.execute(q, {"job_id": job_id}).fetchall() for name, q in queries.items()}


    def counts(self, *, source: str | None = None) -> dict[str, int]:
        """Jobs by state (of one intake source when given)."""
        query, params = ((job_read_sql.COUNT_JOBS_BY_STATE, {}) if source is None
                         else (job_read_sql.COUNT_SOURCE_JOBS_BY_STATE, {"source": source}))
        with self._pool.connection() as conn:
            return {state: n for state, n in conn.execute(query, params)}

    def open_count(self, mode: str, *, pins: Sequence[tuple[str, str]] | None = None) -> int:
        """Jobs of `mode` (and of the (processor, version) `pins`, when given) still waiting or leased."""
        with self._pool.connection() as conn:
            return conn.execute(job_read_sql.COUNT_OPEN_JOBS, {"mode": mode, "pins": pin_keys(pins)}).fetchone()[0]

    def get(self, job_id: int) -> dict[str, Any] | None:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(job_read_sql.GET_JOB, {"job_id": job_id}).fetchone()

    def events(self, job_id: int) -> list[dict[str, Any]]:
        """The job's audit trail, oldest first."""
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(job_read_sql.JOB_EVENTS, {"job_id": job_id}).fetchall()

    def recent_succeeded(self, limit: int = 1000) -> list[tuple[int, str, str | None, Any]]:
        """The latest succeeded jobs with their outputs (for audits of accepted outputs)."""
        with self._pool.connection() as conn:
            return conn.execute(job_read_sql.RECENT_SUCCEEDED, {"limit": limit}).fetchall()

    def stranded_count(self) -> int:
        """Jobs left in submitted/collected although their batch was collected (should be 0)."""
        with self._pool.connection() as conn:
            return conn.execute(job_read_sql.STRANDED_IN_COLLECTED_BATCHES).fetchone()[0]
