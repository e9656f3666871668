"""Provider batches in the store: intent, status, stored results, settling jobs, costs.

Reached as `ForgeStore.batches`; it shares the store's connection pool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forge_dagster.core.models import AcceptedOutput, ResultItem
from forge_dagster.core.store import batch_read_sql, batch_sql, job_sql, operator_sql
from forge_dagster.core.store.types import ClaimedJob
from forge_dagster.core.store.vector_store import write_output_vectors


@dataclass(frozen=True)
class Settlement:
    """What to do with one job of a collected batch."""

    job_id: int
    custom_id: str
    kind: str  # succeeded | invalid | failed | retry | cancelled (an operator's)
    reason: str | None = None
    output: AcceptedOutput | None = None  # set for succeeded: what validation accepted
    raw_output: str | None = None
    exhausted: str = "dead"  # the state a retry ends in when attempts are spent
    delay_s: float = 0.0
    usage: dict[str, int] | None = None
    cost_usd: Decimal | None = None


@dataclass(frozen=True)
class DueWork:
    """Jobs due now: how many, the highest id and their latest change (ms since the epoch). Two
    snapshots are equal only if no due job was added, taken or put back in between."""

    jobs: int
    top_id: int
    changed_ms: int

    @property
    def signature(self) -> str:
        return f"{self.top_id}:{self.jobs}:{self.changed_ms}"


def _json_or_none(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def _accepted_json(settlement: Settlement) -> Jsonb | None:
    """Who accepted a succeeded settlement's output and against which registered version (else None)."""
    if settlement.kind != "succeeded":
        return None
    accepted = settlement.output
    if not isinstance(accepted, AcceptedOutput):
        raise TypeError(f"job {settlement.job_id}: a settlement succeeds only with an AcceptedOutput")
    return Jsonb({"processor": accepted.processor, "processor_version": accepted.processor_version,
                  "fingerprint": accepted.fingerprint, "accepted_by": accepted.accepted_by})


def _json_without_nul(value: Any) -> str:
    """`value` as JSON text for PostgreSQL, whose text and jsonb refuse NUL: a provider line that carries one
    is stored with U+FFFD in its place instead of failing the whole batch's results."""
    text = json.dumps(value)
    if "\\u0000" not in text:
        return text

    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return v.replace("\x00", "\ufffd")
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        return v

    return json.dumps(clean(value))


class BatchRepository:
    def __init__(self, pool, owner: str) -> None:
        self._pool, self.owner = pool, owner

    def _rows(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()

    # -- submission ------------------------------------------------------------------------------
    def record_intent(
        self,
        *,
        provider: str,
        model: str,
        processor: str | None,
        version: str | None,
        members: Sequence[tuple[ClaimedJob, str]],
        bytes_: int,
    ) -> tuple[int, str, set[int]]:
        """Commit the submission intent: a `submitting` batch and its jobs moved claimed -> submitted.
        Returns (batch id, forge batch id, ids of the jobs whose leases were still held and so joined)."""
        with self._pool.connection() as conn:
            batch_id, forge_batch_id = conn.execute(
                batch_sql.INSERT_BATCH,
                {"provider": provider, "model": model, "processor": processor, "version": version,
                 "actor": self.owner},
            ).fetchone()
            held = {
                row[0]
                for row in conn.execute(
                    job_sql.ATTACH_JOBS,
                    {
                        "ids": [j.id for j, _ in members],
                        "tokens": [j.lease_token for j, _ in members],
                        "custom_ids": [cid for _, cid in members],
                        "batch_id": batch_id,
                        "actor": self.owner,
                    },
                )
            }
            conn.execute(batch_sql.SIZE_BATCH, {"batch_id": batch_id, "count": len(held), "bytes": bytes_})
        return batch_id, forge_batch_id, held

    def mark_submitted(self, batch_id: int, provider_batch_id: str, input_file_id: str | None) -> bool:
        with self._pool.connection() as conn:
            cur = conn.execute(
                batch_sql.MARK_SUBMITTED,
                {
                    "batch_id": batch_id,
                    "provider_batch_id": provider_batch_id,
                    "input_file_id": input_file_id,
                },
            )
            return cur.rowcount == 1

    def fail_submission(self, batch_id: int, error: str) -> bool:
        """The provider refused the batch: it ends failed (its jobs are settled by the caller)."""
        with self._pool.connection() as conn:
            return (
                conn.execute(
                    batch_sql.FAIL_SUBMISSION, {"batch_id": batch_id, "error": error[:2000]}
                ).rowcount
                == 1
            )

    def stale_submitting(self, older_than_s: float) -> list[int]:
        """Ids of batches left in `submitting` for longer than `older_than_s` (read only)."""
        with self._pool.connection() as conn:
            return [r[0] for r in conn.execute(batch_sql.STALE_SUBMITTING, {"older_than": older_than_s})]

    def claim_stale_submission(self, older_than_s: float) -> dict[str, Any] | None:
        """Claim one batch left in `submitting` for longer than `older_than_s`, for this caller alone
        (id, provider, created_at, submit_attempts); None when there is none left to claim."""
        rows = self._rows(batch_sql.CLAIM_STALE_SUBMISSION, {"older_than": older_than_s, "actor": self.owner})
        return rows[0] if rows else None

    def known_provider_batch_ids(self, provider: str, since: float) -> set[str]:
        """Provider batch ids already recorded for `provider`'s batches submitted since `since` (unix s)."""
        with self._pool.connection() as conn:
            rows = conn.execute(batch_sql.KNOWN_PROVIDER_BATCHES, {"provider": provider, "since": since})
            return {r[0] for r in rows}

    # -- reading ---------------------------------------------------------------------------------
    def get(self, batch_id: int) -> dict[str, Any] | None:
        rows = self._rows(batch_sql.GET_BATCH, {"batch_id": batch_id})
        return rows[0] if rows else None

    def members(self, batch_id: int) -> list[dict[str, Any]]:
        return self._rows(batch_sql.BATCH_MEMBERS, {"batch_id": batch_id})

    def members_in(self, batch_id: int, states: Sequence[str]) -> int:
        """How many of the batch's jobs are in `states`."""
        return sum(1 for m in self.members(batch_id) if m["state"] in states)

    def open_batches(self) -> list[dict[str, Any]]:
        """Batches the provider is still working on."""
        return self._rows(batch_sql.OPEN_BATCHES, {})

    def ended_uncollected(self) -> list[tuple[int, str]]:
        """(id, provider) of the batches that ended and wait for their results to be collected."""
        with self._pool.connection() as conn:
            return [(r[0], r[1]) for r in conn.execute(batch_sql.ENDED_UNCOLLECTED)]

    def due_work(self, mode: str = "batch") -> DueWork:
        """The jobs of `mode` (batch or realtime) that are due now, summed up for the sensors."""
        with self._pool.connection() as conn:
            n, top, changed = conn.execute(batch_sql.DUE_JOBS, {"mode": mode}).fetchone()
        return DueWork(int(n), int(top), int(changed))

    def succeeded_without_output_or_cost(self, limit: int = 1000) -> list[tuple[int, str]]:
        """(job id, what is missing) for recent succeeded batch jobs lacking their output or their cost."""
        with self._pool.connection() as conn:
            return [(r[0], r[1]) for r in conn.execute(batch_sql.SUCCEEDED_WITHOUT_OUTPUT_OR_COST, {"limit": limit})]

    def cost(self, batch_id: int | None = None) -> Decimal:
        with self._pool.connection() as conn:
            if batch_id is None:
                return conn.execute(batch_sql.TOTAL_COST).fetchone()[0]
            return conn.execute(batch_sql.BATCH_COST, {"batch_id": batch_id}).fetchone()[0]

    def find(self, ref: str | int) -> list[int]:
        """Ids of the batches (hot or archived) that `ref` names: Forge's batch id, its forge batch id
        (fb_...) or the provider's batch id."""
        ref = str(ref).strip()
        params = {"ref": ref, "number": int(ref) if ref.isdigit() and len(ref) < 19 else None}
        with self._pool.connection() as conn:
            return [r[0] for r in conn.execute(batch_read_sql.FIND_BATCH_IDS, params)]

    def page(self, *, states: Sequence[str] | None = None, provider: str | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
        """Batches newest first (of `states` and `provider` when given), with age, jobs by state and cost."""
        params = {"states": list(states) if states else None, "provider": provider, "limit": limit}
        return self._rows(batch_read_sql.LIST_BATCHES, params)

    def outline(self, batch_id: int) -> dict[str, Any]:
        """What an operator reads of one batch beside its row: the jobs that rode in it by their state now,
        the stored provider answers by outcome, and the operator's actions on it."""
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            jobs = {r["state"]: r["count"] for r in cur.execute(batch_read_sql.BATCH_JOB_STATES, {"batch_id": batch_id})}
            lines = {r["outcome"]: r["count"]
                     for r in cur.execute(batch_read_sql.BATCH_RESULT_OUTCOMES, {"batch_id": batch_id})}
            actions = cur.execute(operator_sql.BATCH_ACTIONS, {"batch_id": batch_id}).fetchall()
        return {"jobs": jobs, "results": lines, "actions": actions}

    # -- status and results ----------------------------------------------------------------------
    def update_status(self, batch_id: int, state: str, counts: dict[str, int], raw_status: str) -> bool:
        with self._pool.connection() as conn:
            return (
                conn.execute(
                    batch_sql.UPDATE_STATUS,
                    {
                        "batch_id": batch_id,
                        "state": state,
                        "counts": Jsonb(counts),
                        "raw_status": raw_status,
                    },
                ).rowcount
                == 1
            )

    def store_results(self, batch_id: int, items: Sequence[tuple[int, int, ResultItem]]) -> int:
        """Store (job id, attempt, result) lines as received and move their jobs to collected.
        Idempotent: returns how many jobs moved now."""
        rows = []
        for job_id, attempt, item in items:
            row = {"custom_id": item.custom_id, "job_id": job_id, "attempt": attempt, "outcome": str(item.outcome),
                   "status_code": item.status_code, "text": item.text, "tool_input": item.tool_input,
                   "stop_reason": item.stop_reason, "usage": item.usage.to_dict(),
                   "error_class": str(item.error.error_class) if item.error else None,
                   "error_message": item.error.message[:4000] if item.error else None, "raw": item.raw}
            rows.append({k: v for k, v in row.items() if v is not None})  # absent: SQL NULL
        vectors = [(item.custom_id, item.vector) for _, _, item in items if item.vector is not None]
        with self._pool.connection() as conn:
            conn.execute(batch_sql.INSERT_RESULTS, {"batch_id": batch_id, "rows": _json_without_nul(rows)})
            if vectors:
                conn.execute(batch_sql.STORE_RESULT_VECTORS, {"batch_id": batch_id, "custom_ids": [c for c, _ in vectors],
                                                              "vectors": [v for _, v in vectors]})
            return conn.execute(
                job_sql.MARK_COLLECTED, {"batch_id": batch_id, "actor": self.owner}
            ).fetchone()[0]

    def stored_results(self, batch_id: int) -> list[dict[str, Any]]:
        return self._rows(batch_sql.STORED_RESULTS, {"batch_id": batch_id})

    def settle(
        self,
        batch: dict[str, Any],
        settlements: Sequence[Settlement],
        *,
        from_states: Sequence[str],
        pricing_version: str,
        batch_priced: bool = True,
        conn: Any = None,
        actor: str | None = None,
    ) -> dict[int, str]:
        """Apply settlements to jobs of `batch` (a row from `get`) still in `from_states`; book each
        cost once. Returns {job id: new state} for the jobs that changed now. With `conn`, it runs in
        the caller's transaction (so outbox rows can be written beside it); `actor` (default: this store's
        owner) is who the job events name."""
        if not settlements:
            return {}
        params = {
            "ids": [s.job_id for s in settlements],
            "custom_ids": [s.custom_id for s in settlements],
            "kinds": [s.kind for s in settlements],
            "outputs": [_json_or_none(s.output.output if s.output is not None else None) for s in settlements],
            "accepted": [_accepted_json(s) for s in settlements],
            "raw_outputs": [s.raw_output for s in settlements],
            "reasons": [s.reason for s in settlements],
            "exhausted": [s.exhausted for s in settlements],
            "delays": [s.delay_s for s in settlements],
            "usages": [_json_or_none(s.usage) for s in settlements],
            "costs": [s.cost_usd for s in settlements],
            "batch_id": batch["id"],
            "from_states": list(from_states),
            "provider": batch["provider"],
            "model": batch["model"],
            "processor": batch["processor"],
            "pricing_version": pricing_version,
            "batch_priced": batch_priced,
            "actor": actor or self.owner,
        }
        with nullcontext(conn) if conn is not None else self._pool.connection() as c:
            states = {row[0]: row[1] for row in c.execute(job_sql.SETTLE_JOBS, params)}
            write_output_vectors(c, [(s.job_id, s.output) for s in settlements
                                     if s.output is not None and states.get(s.job_id) == "succeeded"])
            return states

    def requeue_unsubmitted(self, batch_id: int, reason: str, delay_s: float) -> int:
        """Every key refused the batch (quota, credit, auth): it ends failed and its jobs go back to pending
        without spending their attempt. Returns the jobs requeued (0 if the batch was not `submitting`)."""
        with self._pool.connection() as conn:
            if conn.execute(batch_sql.FAIL_SUBMISSION, {"batch_id": batch_id, "error": reason[:2000]}).fetchone() is None:
                return 0
            return self._requeue_jobs(conn, batch_id, reason, delay_s)

    def requeue_never_ran(self, batch_id: int, reason: str, delay_s: float) -> int:
        """The provider failed the whole batch before running any of it (e.g. the model's enqueued-token
        limit): its jobs go back to pending without spending their attempt. Returns the jobs requeued."""
        with self._pool.connection() as conn:
            return self._requeue_jobs(conn, batch_id, reason, delay_s)

    def _requeue_jobs(self, conn, batch_id: int, reason: str, delay_s: float) -> int:
        params = {"batch_id": batch_id, "reason": reason[:500], "delay": float(delay_s), "actor": self.owner}
        return int(conn.execute(job_sql.REQUEUE_BATCH_UNSPENT, params).fetchone()[0])

    def requeue_unfinished(self, batch_id: int, job_ids: Sequence[int], *, reason: str, actor: str,
                           conn: Any) -> set[int]:
        """The operator's requeue of jobs of a cancelled batch the provider never ran (collected, their
        result a cancellation): back to pending with their attempt given back, in the caller's transaction.
        Returns the ids moved."""
        params = {"batch_id": batch_id, "ids": list(job_ids), "reason": reason[:500], "actor": actor}
        return {r[0] for r in conn.execute(job_sql.REQUEUE_UNFINISHED_UNSPENT, params)}

    def record_cancel(self, *, actor: str, reason: str, selector: dict[str, Any], changed: int,
                      skipped: list[dict[str, Any]], conn: Any) -> int:
        """Record an operator's cancel of a batch in `operator_actions`, in the caller's transaction."""
        params = {"action": "cancel_batch", "actor": actor, "reason": reason, "selector": Jsonb(selector),
                  "changed": changed, "skipped": Jsonb(skipped)}
        return conn.execute(operator_sql.RECORD_ACTION, params).fetchone()[0]

    def counts(self, *, since: datetime | None = None) -> dict[str, int]:
        """Batches by state (created at or after `since` when given)."""
        query, params = ((batch_sql.COUNT_BATCHES_BY_STATE, {}) if since is None
                         else (batch_sql.COUNT_BATCHES_SINCE, {"since": since}))
        with self._pool.connection() as conn:
            return {state: n for state, n in conn.execute(query, params)}

    def mark_collected(self, batch_id: int) -> bool:
        with self._pool.connection() as conn:
            return conn.execute(batch_sql.MARK_BATCH_COLLECTED, {"batch_id": batch_id}).rowcount == 1

    # -- provider storage ----------------------------------------------------------------------------
    def to_release(self, provider: str, *, retention_s: float, batch_id: int | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
        """Batches of `provider` whose provider files may be deleted (every line stored; see the SQL)."""
        return self._rows(batch_sql.BATCHES_TO_RELEASE, {"provider": provider, "retention_s": retention_s,
                                                         "batch_id": batch_id, "limit": limit})

    def mark_released(self, batch_id: int) -> None:
        with self._pool.connection() as conn:
            conn.execute(batch_sql.MARK_FILES_RELEASED, {"batch_id": batch_id})

    def to_forget(self, days: float, limit: int = 200) -> list[dict[str, Any]]:
        """Collected Anthropic batches older than `days` still held at the provider."""
        return self._rows(batch_sql.BATCHES_TO_FORGET, {"days": days, "limit": limit})

    def mark_forgotten(self, batch_id: int) -> None:
        with self._pool.connection() as conn:
            conn.execute(batch_sql.MARK_FORGOTTEN, {"batch_id": batch_id})

    def results_at_risk(self, days: float) -> list[dict[str, Any]]:
        """Uncollected Anthropic batches whose results the provider deletes within `days`."""
        return self._rows(batch_sql.RESULTS_AT_RISK, {"days": days})

    def known_input_files(self, file_ids: Sequence[str]) -> set[str]:
        """The ids among `file_ids` that a batch of Forge's (hot or archived) was created from."""
        with self._pool.connection() as conn:
            return {r[0] for r in conn.execute(batch_sql.KNOWN_INPUT_FILES, {"file_ids": list(file_ids)})}
