"""Operating Forge from the store: the archive, metrics and the operator view.

Reached as `ForgeStore.operations`; it shares the store's connection pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from forge_dagster.core.store import archive_sql, operations_sql, outbox_sql


@dataclass
class ArchiveReport:
    batches: int = 0
    batch_jobs: int = 0
    result_lines: int = 0
    unbatched_jobs: int = 0
    outbox_rows: int = 0

    @property
    def moved(self) -> int:
        return self.batches + self.batch_jobs + self.result_lines + self.unbatched_jobs + self.outbox_rows


@dataclass
class MetricsSnapshot:
    """Everything the Prometheus collector reports, read in one connection."""

    jobs_by_state: dict[str, int] = field(default_factory=dict)
    claims: int = 0
    reclaims: int = 0
    swept: int = 0
    provider_outcomes: dict[tuple[str, str], int] = field(default_factory=dict)  # batch result lines
    provider_calls: dict[tuple[str, str], int] = field(default_factory=dict)  # realtime calls
    usage: list[dict[str, Any]] = field(default_factory=list)  # provider, model, tokens..., cost_usd
    outbox_undelivered: int = 0
    outbox_lag_s: float = 0.0
    outbox_retrying: int = 0
    outbox_delivered: int = 0
    callbacks_refused: int = 0  # stamps closed because the callback policy refused their destination
    batches_by_state: dict[str, int] = field(default_factory=dict)
    oldest_open_batch_s: dict[str, float] = field(default_factory=dict)


class OperationsRepository:
    def __init__(self, pool) -> None:
        self._pool = pool

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params or {}).fetchall()

    def latest_key_events(self) -> list[dict[str, Any]]:
        """The latest key.* / provider.* event per outbox key (paused, resumed, ...)."""
        return self._rows(operations_sql.LATEST_KEY_EVENTS)

    # -- archive ---------------------------------------------------------------------------------
    def archive(self, older_than_s: float, *, limit: int = 500, max_rounds: int = 100) -> ArchiveReport:
        """Move cooled batches (with their jobs and result lines), finished unbatched jobs and delivered
        outbox rows older than `older_than_s` into the archive tables, `limit` at a time."""
        report = ArchiveReport()
        params = {"older_than_s": older_than_s, "limit": limit}
        for _ in range(max_rounds):
            with self._pool.connection() as conn:
                batches, jobs, results = conn.execute(archive_sql.ARCHIVE_COOLED_BATCHES, params).fetchone()
                unbatched = conn.execute(archive_sql.ARCHIVE_FINISHED_UNBATCHED_JOBS, params).fetchone()[0]
                outbox = conn.execute(archive_sql.ARCHIVE_DELIVERED_OUTBOX, params).fetchone()[0]
            report.batches += batches
            report.batch_jobs += jobs
            report.result_lines += results
            report.unbatched_jobs += unbatched
            report.outbox_rows += outbox
            if max(batches, unbatched, outbox) < limit:
                break
        return report

    def archive_totals(self) -> dict[str, Any]:
        with self._pool.connection() as conn:
            batches, jobs, results, outbox, last = conn.execute(archive_sql.ARCHIVE_TOTALS).fetchone()
        return {"batches": batches, "jobs": jobs, "result_lines": results, "outbox_rows": outbox,
                "last_archived_at": last}

    def recently_archived(self, limit: int = 10) -> list[dict[str, Any]]:
        return self._rows(archive_sql.RECENTLY_ARCHIVED_BATCHES, {"limit": limit})

    def find_job(self, job_id: int) -> dict[str, Any] | None:
        """A job wherever it lives (hot or archived), with `archived` telling which."""
        rows = self._rows(archive_sql.FIND_JOB, {"job_id": job_id})
        return rows[0] if rows else None

    def find_batch(self, batch_id: int) -> dict[str, Any] | None:
        """A batch wherever it lives (hot or archived), with `archived` telling which."""
        rows = self._rows(archive_sql.FIND_BATCH, {"batch_id": batch_id})
        return rows[0] if rows else None

    def archived_batch_jobs(self, batch_id: int) -> list[dict[str, Any]]:
        return self._rows(archive_sql.ARCHIVED_BATCH_JOBS, {"batch_id": batch_id})

    def split_batches(self) -> tuple[int, int]:
        """(hot jobs of archived batches, archived jobs of batches not archived): both 0 when consistent."""
        with self._pool.connection() as conn:
            return tuple(conn.execute(archive_sql.SPLIT_BATCHES).fetchone())

    # -- metrics and the operator's view -----------------------------------------------------------
    def metrics_snapshot(self) -> MetricsSnapshot:
        """Counts for the Prometheus collector, hot and archived rows together."""
        snap = MetricsSnapshot()
        with self._pool.connection() as conn:
            for state, n in conn.execute(operations_sql.JOBS_BY_STATE_ALL):
                snap.jobs_by_state[state] = snap.jobs_by_state.get(state, 0) + n
            snap.claims, snap.reclaims, snap.swept = conn.execute(operations_sql.CLAIM_EVENTS).fetchone()
            for provider, outcome, n in conn.execute(operations_sql.PROVIDER_OUTCOMES):
                snap.provider_outcomes[(provider, outcome)] = snap.provider_outcomes.get((provider, outcome), 0) + n
            snap.provider_calls = {(p, o): int(n) for p, o, n in conn.execute(operations_sql.PROVIDER_CALLS)}
            snap.usage = [
                {"provider": p, "model": m, "input": int(i), "cached_input": int(c), "output": int(o),
                 "reasoning": int(r), "cost_usd": float(cost), "attempts": n}
                for p, m, i, c, o, r, cost, n in conn.execute(operations_sql.COST_AND_TOKENS)
            ]
            undelivered, lag, retrying, delivered, refused = conn.execute(outbox_sql.OUTBOX_STATS).fetchone()
            snap.outbox_undelivered, snap.outbox_lag_s = int(undelivered), float(lag)
            snap.outbox_retrying, snap.outbox_delivered = int(retrying), int(delivered)
            snap.callbacks_refused = int(refused)
            snap.batches_by_state = dict(conn.execute(operations_sql.BATCHES_BY_STATE_ALL).fetchall())
            snap.oldest_open_batch_s = {p: float(s) for p, s in conn.execute(operations_sql.OLDEST_OPEN_BATCH)}
        return snap

    def add_provider_calls(self, calls: Mapping[tuple[str, str], int], *, conn: psycopg.Connection) -> None:
        """Count realtime provider calls {(provider, outcome class): n} in the caller's transaction."""
        rows = sorted((p, o, n) for (p, o), n in calls.items() if n)
        if rows:
            conn.execute(operations_sql.ADD_PROVIDER_CALLS, {
                "providers": [r[0] for r in rows], "outcomes": [r[1] for r in rows], "calls": [r[2] for r in rows]})

    def open_batches(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._rows(operations_sql.OPEN_BATCHES_VIEW, {"limit": limit})

    def recent_rejected_jobs(self, limit: int = 10) -> list[dict[str, Any]]:
        return self._rows(operations_sql.RECENT_REJECTED_JOBS, {"limit": limit})

    def finished_since(self, seconds: float) -> tuple[int, int]:
        """(invalid or dead, all finished) jobs in the last `seconds`."""
        with self._pool.connection() as conn:
            bad, total = conn.execute(operations_sql.FINISHED_SINCE, {"s": seconds}).fetchone()
        return int(bad), int(total)

    def cost_since(self, seconds: float) -> float:
        with self._pool.connection() as conn:
            return float(conn.execute(operations_sql.COST_SINCE, {"s": seconds}).fetchone()[0])
