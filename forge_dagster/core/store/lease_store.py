"""The PostgreSQL lease store: enqueue, claim, heartbeat, finish, fail/retry, sweep, outbox.

Workers anywhere share the queue through this class alone: claims use SKIP LOCKED, every change to a
leased job is fenced by its lease token, and expired leases come back without an operator.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forge_dagster.core.models import (
    AcceptedOutput,
    EnqueueReport,
    JobSpec,
    JobState,
    Rejection,
    UnusableCallback,
)
from forge_dagster.core.store import db, job_sql, outbox_sql
from forge_dagster.core.store.batch_store import BatchRepository
from forge_dagster.core.store.key_store import KeyRepository
from forge_dagster.core.store.knowledge_store import KnowledgeRepository
from forge_dagster.core.store.operations_store import OperationsRepository
from forge_dagster.core.store.processor_store import ProcessorRepository
from forge_dagster.core.store.run_lease_store import RunLeaseRepository
from forge_dagster.core.store.types import (
    ClaimedJob,
    LeaseLost,
    OutboxMessage,
    SweepReport,
    default_owner,
)

# What PostgreSQL may still refuse in a row that passed JobSpec's checks (a constraint added later, say).
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.RaiseException, UnicodeError)


# A session idle inside a transaction for longer than the lease TTL (and at least this long) is ended by the
# server: a worker frozen mid-transaction (SIGSTOP, a stalled VM) would otherwise keep its row locks, and
# SKIP LOCKED claims would pass its jobs by long after their leases expired.
IDLE_IN_TRANSACTION_FLOOR_S = 10.0


def backoff_delay(attempt: int, *, base_s: float = 2.0, cap_s: float = 300.0) -> float:
    """Exponential backoff with full jitter for the retry after `attempt` (1-based)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** max(0, attempt - 1)))


def _pin_keys(pins: Sequence[tuple[str, str]] | None) -> list[str] | None:
    """(processor, version) pairs as the claim's "name version" keys (names and versions hold no space)."""
    return None if pins is None else [f"{name} {version}" for name, version in pins]


class LeaseStore:
    """Jobs, leases, events and the outbox in one PostgreSQL schema."""

    def __init__(
        self,
        url: str,
        schema: str = "forge",
        *,
        pool_size: int = 8,
        lease_ttl_s: float = 30.0,
        owner: str | None = None,
        application_name: str = "forge",
        idle_in_transaction_s: float | None = None,
    ) -> None:
        self.url = url
        self.schema = db.check_schema(schema)
        self.lease_ttl_s = lease_ttl_s
        self.owner = owner or default_owner()
        self._pool = db.open_pool(url, schema, max_size=pool_size, application_name=application_name,
                                  idle_in_transaction_s=idle_in_transaction_s
                                  or max(lease_ttl_s, IDLE_IN_TRANSACTION_FLOOR_S))

    @property
    def batches(self):
        """Provider batches in this store (intent, status, results, settling, costs)."""
        return BatchRepository(self._pool, self.owner)

    @property
    def runs(self):
        """Leases of the Dagster runs that do Forge's work (take, renew, declare dead)."""
        return RunLeaseRepository(self._pool, self.owner)

    @property
    def operations(self):
        """Relay lanes, the archive, metrics and the operator's view over this store."""
        return OperationsRepository(self._pool)

    @property
    def knowledge(self):
        """The nightly runtime's tables (memories, fences, research, briefings, healing)."""
        return KnowledgeRepository(self._pool)

    @property
    def keys(self):
        """Provider keys (pause, probe, resume), outages, submission holds and realtime job statements."""
        return KeyRepository(self)

    @property
    def processors(self):
        """The processor registry (versions, status), repair lookups and exports; `.costs` for money."""
        return ProcessorRepository(self._pool, self.owner)

    # -- lifecycle -------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now."""
        return db.migrate(self.url, self.schema)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> LeaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection in one transaction: commits at the end, rolls back on error. Pass it as `conn=`
        to several operations (a transition and its outbox rows) to make them atomic."""
        with self._pool.connection() as conn:
            yield conn

    def statement(self) -> AbstractContextManager[psycopg.Connection]:
        """A connection in autocommit for one self-contained statement: no transaction is left open (and no
        row lock held) if the caller stops between the statement and its commit."""
        return db.one_statement(self._pool)

    def _use(self, conn: psycopg.Connection | None, *, statements: int = 2) -> AbstractContextManager[psycopg.Connection]:
        """`conn` (the caller's transaction), else a pooled one: in a transaction of its own, or in
        autocommit when the work is a single statement."""
        if conn is not None:
            return nullcontext(conn)
        return db.one_statement(self._pool) if statements == 1 else self._pool.connection()

    # -- intake ----------------------------------------------------------------------------------
    def enqueue(self, specs: Sequence[JobSpec | str], *, source: str = "api") -> EnqueueReport:
        """Enqueue routed jobs with one COPY (`core/intake/routing.submit_jobs` routes them first; a string in
        a spec's place is routing's reason to refuse it). A job that cannot be stored (no mode, a duplicate
        (source, external_id), a NUL character, a bad mode or max_attempts, a payload too big...) is
        rejected with its reason; the others still go in."""
        report, rows = EnqueueReport(), []
        for seq, spec in enumerate(specs):
            try:
                if isinstance(spec, str):  # routing refused it: the string is the reason
                    raise ValueError(spec)
                if spec.mode is None:
                    raise ValueError("no mode: route the job first (core/intake/routing.submit_jobs)")
                rows.append((seq, source, spec.external_id or uuid.uuid4().hex, spec.processor,
                             spec.processor_version, spec.mode, spec.encoded_payload(), spec.max_attempts,
                             spec.callback_url, spec.due_at))
            except ValueError as exc:
                report.rejected.append(Rejection(seq, getattr(spec, "external_id", None), str(exc)))
        ext_ids = {row[0]: row[2] for row in rows}
        with self._pool.connection() as conn, conn.cursor() as cur:
            inserted = []
            cur.execute(job_sql.CREATE_STAGING)
            try:
                with conn.transaction():
                    inserted = self._insert_staged(cur, rows)
            except _ROW_ERRORS:  # find the row(s) PostgreSQL refuses, one at a time
                for row in rows:
                    try:
                        with conn.transaction():
                            inserted += self._insert_staged(cur, [row], clear=True)
                    except _ROW_ERRORS as exc:
                        refusal = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
                        report.rejected.append(Rejection(row[0], row[2], f"refused by PostgreSQL: {refusal}"))
        for seq, job_id in inserted:
            if job_id is None:
                report.rejected.append(Rejection(seq, ext_ids[seq], f"duplicate id {ext_ids[seq]!r} for source {source!r}"))
            else:
                report.accepted.append(job_id)
        report.rejected.sort(key=lambda r: r.index)
        return report

    def _insert_staged(self, cur: psycopg.Cursor, rows: list[tuple], *, clear: bool = False) -> list[tuple]:
        with cur.copy(job_sql.COPY_STAGING) as copy:
            for row in rows:
                copy.write_row(row)
        inserted = cur.execute(job_sql.INSERT_FROM_STAGING, {"actor": self.owner}).fetchall()
        if clear:
            cur.execute(job_sql.CLEAR_STAGING)
        return inserted

    def review_unchecked(
        self, check: Callable[[dict[str, Any]], tuple[str, str]], *, limit: int = 10_000
    ) -> tuple[int, list[tuple[int, str]]]:
        """Review pending rows other applications inserted (none is claimable before). `check(row)` gets
        the row (processor, processor_version, mode, payload, due_at, callback_url) and returns the
        (version, mode) to pin, or raises ValueError: the row then fails with that reason (and, for an
        UnusableCallback, without a stamp to that callback). Returns (accepted count, [(job id, reason) refused])."""
        accepted, refused = [], []
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            for row in cur.execute(job_sql.UNREVIEWED_JOBS, {"limit": limit}).fetchall():
                try:
                    accepted.append((row["id"], *check(row)))
                except ValueError as exc:
                    refused.append((row["id"], str(exc), isinstance(exc, UnusableCallback)))
            if accepted:
                ids, versions, modes = (list(col) for col in zip(*accepted, strict=True))
                cur.execute(job_sql.ACCEPT_REVIEWED, {"ids": ids, "versions": versions, "modes": modes,
                                                      "actor": "intake"})
            if refused:
                ids, reasons, drop = (list(col) for col in zip(*refused, strict=True))
                cur.execute(job_sql.REFUSE_REVIEWED, {"ids": ids, "reasons": reasons, "drop_callback": drop,
                                                      "actor": "intake"})
        return len(accepted), [(job_id, reason) for job_id, reason, _ in refused]

    # -- leases ----------------------------------------------------------------------------------
    def claim(
        self, k: int, *, mode: str = "realtime", to_state: str = JobState.RUNNING, ttl_s: float | None = None,
        owner: str | None = None, pins: Sequence[tuple[str, str]] | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to k jobs of `mode` in one statement (of the (processor, version) `pins` only, when
        given); each gets a new lease token."""
        params = {"k": k, "mode": mode, "to_state": str(to_state), "owner": owner or self.owner,
                  "ttl": ttl_s or self.lease_ttl_s, "pins": _pin_keys(pins)}
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
        with self._use(conn, statements=len(states)) as c:
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
        with self._use(conn, statements=len(states)) as c:
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
        with self._use(conn) as c:
            if not self.succeed_many([(job, accepted)], conn=c):
                raise LeaseLost(f"job {job.id}: lease {job.lease_token} no longer held")
            self.write_outbox(outbox, conn=c)

    def fail_many(
        self, items: Sequence[tuple[ClaimedJob, str, bool]], *, conn: psycopg.Connection | None = None,
        base_delay_s: float = 2.0,
    ) -> dict[int, str]:
        """Record failures (job, reason, retryable): retryable ones go back to pending with backoff until
        max_attempts, then dead; the others fail. Returns {job id: new state} for jobs still held."""
        result: dict[int, str] = {}
        from_states = {job.state for job, _, _ in items}
        with self._use(conn, statements=len(from_states)) as c:
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
        with self._use(conn) as c:
            states = self.fail_many([(job, reason, retryable)], conn=c, base_delay_s=base_delay_s)
            if job.id not in states:
                raise LeaseLost(f"job {job.id}: lease {job.lease_token} no longer held")
            self.write_outbox(outbox, conn=c)
            return states[job.id]

    def sweep_expired(
        self, *, limit: int = 1000,
        notices: Callable[[list[tuple[int, str, str]]], Iterable[OutboxMessage]] | None = None,
    ) -> SweepReport:
        """Free expired leases: back to pending, or dead when the attempts are spent. `notices` builds the
        outbox messages for the swept (job id, state, reason) rows, written in the sweep's own transaction."""
        with self._pool.connection() as conn:
            rows = conn.execute(job_sql.SWEEP_EXPIRED_LEASES, {"limit": limit, "actor": "sweeper"}).fetchall()
            if notices is not None:
                self.write_outbox(notices(rows), conn=conn)
        dead = sum(1 for _, state, _ in rows if state == JobState.DEAD)
        return SweepReport(requeued=len(rows) - dead, dead=dead)

    # -- outbox ----------------------------------------------------------------------------------
    def write_outbox(self, messages: Iterable[OutboxMessage], *, conn: psycopg.Connection | None = None) -> list[int]:
        """Write outbox rows (in the caller's transaction when `conn` is given)."""
        ids = []
        with self._use(conn) as c:
            for m in messages:
                params = {"topic": m.topic, "key": m.key, "payload": Jsonb(m.payload)}
                ids.append(c.execute(outbox_sql.INSERT_OUTBOX, params).fetchone()[0])
        return ids

    def mark_delivered(self, conn: psycopg.Connection, ids: Sequence[int]) -> None:
        """Mark relayed outbox rows delivered, in the relay's transaction (rows from `operations.fetch_ready`)."""
        conn.execute(outbox_sql.MARK_DELIVERED, {"ids": list(ids)})

    # -- reading ---------------------------------------------------------------------------------
    def counts(self, *, source: str | None = None) -> dict[str, int]:
        """Jobs by state (of one intake source when given)."""
        query, params = ((job_sql.COUNT_JOBS_BY_STATE, {}) if source is None
                         else (job_sql.COUNT_SOURCE_JOBS_BY_STATE, {"source": source}))
        with self._pool.connection() as conn:
            return {state: n for state, n in conn.execute(query, params)}

    def open_count(self, mode: str, *, pins: Sequence[tuple[str, str]] | None = None) -> int:
        """Jobs of `mode` (and of the (processor, version) `pins`, when given) still waiting or leased."""
        with self._pool.connection() as conn:
            return conn.execute(job_sql.COUNT_OPEN_JOBS, {"mode": mode, "pins": _pin_keys(pins)}).fetchone()[0]

    def batch_counts(self, *, since: datetime | None = None) -> dict[str, int]:
        """Batches by state (created at or after `since` when given)."""
        query, params = ((job_sql.COUNT_BATCHES_BY_STATE, {}) if since is None
                         else (job_sql.COUNT_BATCHES_SINCE, {"since": since}))
        with self._pool.connection() as conn:
            return {state: n for state, n in conn.execute(query, params)}

    def source_cost(self, source: str) -> float:
        """Cost booked for the jobs of one intake source, in USD."""
        with self._pool.connection() as conn:
            return float(conn.execute(job_sql.SOURCE_COST, {"source": source}).fetchone()[0])

    def events(self, job_id: int) -> list[dict[str, Any]]:
        """The job's audit trail, oldest first."""
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(job_sql.JOB_EVENTS, {"job_id": job_id}).fetchall()

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(job_sql.GET_JOB, {"job_id": job_id}).fetchone()

    def recent_succeeded(self, limit: int = 1000) -> list[tuple[int, str, str | None, Any]]:
        """The latest succeeded jobs with their outputs (for audits of accepted outputs)."""
        with self._pool.connection() as conn:
            return conn.execute(job_sql.RECENT_SUCCEEDED, {"limit": limit}).fetchall()

    def stranded_count(self) -> int:
        """Jobs left in submitted/collected although their batch was collected (should be 0)."""
        with self._pool.connection() as conn:
            return conn.execute(job_sql.STRANDED_IN_COLLECTED_BATCHES).fetchone()[0]

    def outbox_lag(self) -> tuple[int, float]:
        """(undelivered rows, age in seconds of the oldest one)."""
        with self._pool.connection() as conn:
            n, age = conn.execute(outbox_sql.OUTBOX_LAG).fetchone()
        return int(n), float(age)
