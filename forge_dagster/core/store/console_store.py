"""What the operator's console reads: filtered pages of jobs and batches (hot or archived), a batch's
status history, members and runs, processor rates, keys with their pacing, budgets' holds, the night.

Reached as `ForgeStore.console`; it shares the store's connection pool and writes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from forge_dagster.core.store import console_sql

JOB_STATES = ("pending", "claimed", "running", "submitted", "collected", "succeeded", "invalid", "failed",
              "dead", "cancelled")  # as counted by console_sql.JOB_COUNTS_ALL
BATCH_STATES = ("building", "submitting", "in_progress", "cancelling", "ended_completed", "ended_expired",
                "ended_cancelled", "ended_failed", "collected")
COUNT_CAP = 1_000  # exact counts per state stop here (then an estimate): bounded time with millions of jobs
RATES_WINDOW = 50_000  # processor rates are of the newest this many jobs


def like_prefix(text: str) -> str:
    """`text` as a LIKE prefix pattern, its wildcards taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass
class JobFilter:
    """What the jobs list is filtered by; every field optional."""

    states: list[str] | None = None
    processor: str | None = None
    version: str | None = None
    batch_id: int | None = None
    provider: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None  # an intake id prefix, or a Forge id

    @property
    def narrowed(self) -> bool:
        """Filtered by anything but state."""
        return any(v is not None for k, v in asdict(self).items() if k != "states")

    def params(self) -> dict[str, Any]:
        params = asdict(self)
        q = (self.q or "").strip()
        params["q"] = like_prefix(q) if q else None
        params["q_id"] = int(q) if q.isdigit() and len(q) < 18 else None
        params["states"] = list(self.states) if self.states else None
        return params


@dataclass
class JobCounts:
    """Jobs per state as the console shows them: `approximate` states are the planner's estimate (past the
    exact cap); `sampled_from` says the counts are of the newest that many matches only."""

    by_state: dict[str, int]
    approximate: set[str] = field(default_factory=set)
    sampled_from: int | None = None

    def get(self, state: str, default: int = 0) -> int:
        return self.by_state.get(state, default)


class ConsoleRepository:
    def __init__(self, pool) -> None:
        self._pool = pool

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params or {}).fetchall()

    # -- jobs ------------------------------------------------------------------------------------
    def jobs(self, where: JobFilter, *, before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """A page of jobs, newest first; the next page starts `before` the last id of this one."""
        return self._rows(console_sql.JOBS_PAGE, {**where.params(), "before": before, "limit": limit})

    def job_counts(self, where: JobFilter, *, cap: int = COUNT_CAP) -> JobCounts:
        """Jobs per state under `where` (its states aside). Unfiltered: each state exact up to `cap`, else
        the planner's estimate. Filtered: among the newest `cap` jobs the filter matches."""
        if not where.narrowed:
            exact = {r["state"]: int(r["n"]) for r in self._rows(console_sql.JOB_COUNTS_ALL, {"cap": cap})}
            capped = {state for state, n in exact.items() if n >= cap}
            estimates = ({r["state"]: int(r["estimate"]) for r in self._rows(console_sql.JOB_STATE_ESTIMATES)}
                         if capped else {})
            return JobCounts({s: max(estimates.get(s, 0), cap) if s in capped else n for s, n in exact.items()},
                             approximate=capped)
        rows = self._rows(console_sql.JOB_COUNTS_FILTERED, {**where.params(), "cap": cap})
        counts = {r["state"]: int(r["n"]) for r in rows}
        return JobCounts(counts, sampled_from=cap if sum(counts.values()) >= cap else None)

    def archived_jobs(self, where: JobFilter, *, before: int | None = None, limit: int = 50
                      ) -> list[dict[str, Any]]:
        return self._rows(console_sql.ARCHIVED_JOBS_PAGE, {**where.params(), "before": before, "limit": limit})

    def archived_results(self, job_id: int, batch_id: int) -> list[dict[str, Any]]:
        return self._rows(console_sql.ARCHIVED_JOB_RESULTS, {"job_id": job_id, "batch_id": batch_id})

    def stamps(self, job_id: int) -> list[dict[str, Any]]:
        """The job's callback deliveries (outbox rows), hot and archived."""
        return self._rows(console_sql.JOB_STAMPS, {"key": f"stamp:job:{job_id}"})

    # -- batches ---------------------------------------------------------------------------------
    def batches(self, *, states: list[str] | None = None, provider: str | None = None, before: int | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
        params = {"states": states or None, "provider": provider, "before": before, "limit": limit}
        return self._rows(console_sql.BATCHES_PAGE, params)

    def archived_batches(self, *, provider: str | None = None, before: int | None = None, limit: int = 50
                         ) -> list[dict[str, Any]]:
        return self._rows(console_sql.ARCHIVED_BATCHES_PAGE, {"provider": provider, "before": before,
                                                               "limit": limit})

    def batch_counts(self) -> dict[str, int]:
        return {r["state"]: int(r["n"]) for r in self._rows(console_sql.BATCH_COUNTS)}

    def batch_history(self, batch_id: int) -> list[dict[str, Any]]:
        return self._rows(console_sql.BATCH_HISTORY, {"batch_id": batch_id})

    def batch_job_states(self, batch_id: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self._rows(console_sql.BATCH_JOB_STATES, {"batch_id": batch_id}):
            counts[r["state"]] = counts.get(r["state"], 0) + int(r["n"])
        return counts

    def batch_jobs(self, batch_id: int, *, limit: int = 200) -> list[dict[str, Any]]:
        return self._rows(console_sql.BATCH_JOBS, {"batch_id": batch_id, "limit": limit})

    def batch_runs(self, partition: str) -> list[dict[str, Any]]:
        """The Dagster runs that took a lease for the batch's partition."""
        return self._rows(console_sql.BATCH_RUNS, {"partition": partition})

    # -- processors, keys, costs, the night -------------------------------------------------------
    def processor_rates(self, *, window: int = RATES_WINDOW) -> dict[tuple[str, str], dict[str, int]]:
        """{(processor, version): {ended, succeeded, invalid}} among the newest `window` jobs."""
        return {(r["processor"], r["processor_version"]): {k: int(r[k]) for k in ("ended", "succeeded", "invalid")}
                for r in self._rows(console_sql.PROCESSOR_RATES, {"window": window})}

    def keys(self) -> list[dict[str, Any]]:
        """Provider keys (masked) with their pacing; never the key itself."""
        return self._rows(console_sql.KEYS_WITH_PACING)

    def costs(self, since: datetime) -> dict[str, list[dict[str, Any]]]:
        """The ledger since `since` by day, model (provider/model) and processor: {grouping: rows}."""
        grouped: dict[str, list[dict[str, Any]]] = {"day": [], "model": [], "processor": []}
        for row in self._rows(console_sql.COSTS_GROUPED, {"since": since}):
            grouped[row.pop("grouping")].append(row)
        return grouped

    def budget_alerts_today(self) -> list[dict[str, Any]]:
        return self._rows(console_sql.BUDGET_ALERTS_TODAY)

    def latest_night(self) -> dict[str, Any] | None:
        rows = self._rows(console_sql.LATEST_NIGHT)
        return rows[0] if rows else None
