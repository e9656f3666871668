"""Money in the store: budgets and the estimates that reserve them, holding jobs back, the operator's
alert, the realtime ledger rows, ledger reports and batch reconciliations.

Reached as `ForgeStore.costs`; it shares the store's connection pool.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forge_dagster.core.store import cost_sql as sql
from forge_dagster.core.store import job_sql
from forge_dagster.core.store.job_store import JobRepository
from forge_dagster.core.store.outbox_store import OutboxRepository
from forge_dagster.core.store.types import ClaimedJob, OutboxMessage

BUDGET_TOPIC = "budget.exceeded"
ALL_SCOPE = "*"  # the budget over every processor together


@dataclass
class BudgetWindow:
    """What the budgets allow right now, read under the budget lock (see `CostRepository.budget_window`)."""

    conn: psycopg.Connection
    budgets: dict[str, Decimal]
    spent: dict[str, Decimal] = field(default_factory=dict)  # booked today, by scope ('*' = all)
    in_flight: dict[str, Decimal] = field(default_factory=dict)  # estimates still in flight, by scope

    def remaining(self, scope: str) -> Decimal:
        return self.budgets[scope] - self.spent.get(scope, Decimal(0)) - self.in_flight.get(scope, Decimal(0))

    def reserve(self, rows: Sequence[tuple[int, int, str, Decimal]]) -> None:
        """Record (job id, attempt, processor, estimate) for admitted attempts, in this transaction."""
        if rows:
            self.conn.execute(sql.INSERT_ESTIMATES, {
                "ids": [r[0] for r in rows], "attempts": [r[1] for r in rows],
                "processors": [r[2] for r in rows], "estimates": [r[3] for r in rows]})


def _by_scope(rows: Sequence[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out = {name: Decimal(value) for name, value in rows}
    out[ALL_SCOPE] = sum(out.values(), Decimal(0))
    return out


@dataclass(frozen=True)
class BilledAttempt:
    """One billed attempt of a realtime job (for the costs ledger and the job row)."""

    job: ClaimedJob
    provider: str
    model: str
    usage: dict[str, int]
    cost_usd: Decimal | None
    raw_output: str | None = None


class CostRepository:
    def __init__(self, pool, owner: str, jobs: JobRepository, outbox: OutboxRepository) -> None:
        self._pool, self.owner, self._jobs, self._outbox = pool, owner, jobs, outbox

    def _rows(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, dict(params or {})).fetchall()

    # -- budgets ---------------------------------------------------------------------------------
    def budgets(self) -> dict[str, Decimal]:
        """Daily USD budgets by scope (a processor name, or '*')."""
        return {r["scope"]: r["daily_usd"] for r in self._rows(sql.LIST_BUDGETS)}

    def set_budget(self, scope: str, daily_usd: Decimal | float | str) -> None:
        with self._pool.connection() as conn:
            conn.execute(sql.SET_BUDGET, {"scope": scope, "daily_usd": Decimal(str(daily_usd))})

    def clear_budget(self, scope: str) -> bool:
        with self._pool.connection() as conn:
            return conn.execute(sql.CLEAR_BUDGET, {"scope": scope}).fetchone() is not None

    def usage_today(self) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """(booked today, estimates in flight), each by scope."""
        with self._pool.connection() as conn:
            return (_by_scope(conn.execute(sql.SPENT_TODAY).fetchall()),
                    _by_scope(conn.execute(sql.IN_FLIGHT).fetchall()))

    @contextmanager
    def budget_window(self) -> Iterator[BudgetWindow]:
        """One transaction under the budget lock: read budgets, today's spend and what is in flight,
        let the caller decide and `reserve`, commit. With no budget set, nothing else is read."""
        with self._pool.connection() as conn:
            conn.execute(sql.LOCK_BUDGETS)
            budgets = {r[0]: r[1] for r in conn.execute(sql.LIST_BUDGETS)}
            if not budgets:
                yield BudgetWindow(conn, {})
                return
            conn.execute(sql.PRUNE_ESTIMATES)
            spent = _by_scope(conn.execute(sql.SPENT_TODAY).fetchall())
            in_flight = _by_scope(conn.execute(sql.IN_FLIGHT).fetchall())
            yield BudgetWindow(conn, budgets, spent, in_flight)

    def hold(
        self,
        held: Sequence[tuple[Any, str]],
        *,
        delay_s: float,
        alerts: Sequence[tuple[str, int, dict[str, Any]]] = (),
    ) -> tuple[set[int], list[str]]:
        """Put claimed jobs (job, reason) back to pending without spending their attempt, due again after
        `delay_s`; record each (scope, held count, payload) alert and, the first time a scope holds work
        on a UTC day, write its `budget.exceeded` outbox row, all in one transaction.
        Returns (ids released, scopes the operator is told about now)."""
        told: list[str] = []
        with self._pool.connection() as conn:
            released = self._jobs.release([(job, reason, delay_s) for job, reason in held], conn=conn)
            for scope, count, payload in alerts:
                first, day = conn.execute(sql.RECORD_ALERT, {"scope": scope, "held": count}).fetchone()
                if first:
                    self._outbox.write([OutboxMessage(BUDGET_TOPIC, f"budget:{scope}:{day.isoformat()}",
                                                      {**payload, "scope": scope, "day": day.isoformat()})], conn=conn)
                    told.append(scope)
        return released, told

    def book_usage(self, items: Sequence[BilledAttempt], *, settled: set[int], pricing_version: str, conn) -> Decimal:
        """Book each billed attempt once in the costs ledger (ON CONFLICT DO NOTHING) and note usage and
        cost on the jobs in `settled` (those this worker's fenced transition just moved). An attempt at a
        model without a price is booked with its tokens and no cost. Returns the cost booked now."""
        if not items:
            return Decimal(0)
        params = {
            "ids": [u.job.id for u in items], "attempts": [u.job.attempt for u in items],
            "providers": [u.provider for u in items], "models": [u.model for u in items],
            "processors": [u.job.processor for u in items], "usages": [Jsonb(u.usage) for u in items],
            "costs": [u.cost_usd for u in items], "pricing_version": pricing_version,
        }
        booked = {job_id: cost for job_id, cost in conn.execute(sql.BOOK_REALTIME_COSTS, params)}
        mine = [u for u in items if u.job.id in settled]
        if mine:
            conn.execute(job_sql.NOTE_JOB_USAGE, {
                "ids": [u.job.id for u in mine], "usages": [Jsonb(u.usage) for u in mine],
                "raw_outputs": [u.raw_output for u in mine], "booked": [booked.get(u.job.id) for u in mine]})
        return sum((cost for cost in booked.values() if cost is not None), Decimal(0))  # None: unpriced

    def source_cost(self, source: str) -> float:
        """Cost booked for the jobs of one intake source, in USD."""
        with self._pool.connection() as conn:
            return float(conn.execute(sql.SOURCE_COST, {"source": source}).fetchone()[0])

    def source_by_processor(self, source: str) -> list[dict[str, Any]]:
        """Per processor of one intake source: jobs, succeeded and the cost booked (USD), by name."""
        return self._rows(sql.SOURCE_BY_PROCESSOR, {"source": source})

    def alerts(self) -> list[dict[str, Any]]:
        return self._rows(sql.BUDGET_ALERTS)

    # -- ledger reports --------------------------------------------------------------------------
    def costs_by(self, by: str, since: datetime) -> list[dict[str, Any]]:
        """Ledger totals grouped by 'processor', 'model' (provider/model) or 'day' (UTC)."""
        if by not in ("processor", "model", "day"):
            raise ValueError(f"cannot group costs by {by!r}: use processor, model or day")
        return self._rows(sql.COSTS_BY, {"by": by, "since": since})

    def cache_by_processor(self, since: datetime) -> list[dict[str, Any]]:
        """Per processor and price class: attempts, cache hits and the cache token classes."""
        return self._rows(sql.CACHE_BY_PROCESSOR, {"since": since})

    def costs_by_day_and_model(self, since: datetime) -> list[dict[str, Any]]:
        return self._rows(sql.COSTS_BY_DAY_AND_MODEL, {"since": since})

    def ledger_total(self, since: datetime) -> tuple[int, Decimal, int]:
        """(ledger rows, USD, rows without a price) booked since `since`."""
        with self._pool.connection() as conn:
            n, total, unpriced = conn.execute(sql.LEDGER_TOTAL, {"since": since}).fetchone()
        return int(n), Decimal(total), int(unpriced)

    # -- reconciliation --------------------------------------------------------------------------
    def batch_sums(self, batch_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(ledger sums, stored result-line usage sums) of one batch."""
        with self._pool.connection() as conn:
            n, inp, cached, out, reasoning, cost = conn.execute(sql.BATCH_LEDGER, {"batch_id": batch_id}).fetchone()
            m, r_inp, r_cached, r_out, r_reasoning = conn.execute(
                sql.BATCH_RESULT_USAGE, {"batch_id": batch_id}).fetchone()
        ledger = {"rows": n, "input_tokens": int(inp), "cached_input_tokens": int(cached),
                  "output_tokens": int(out), "reasoning_tokens": int(reasoning), "cost_usd": str(cost)}
        results = {"rows": m, "input_tokens": int(r_inp), "cached_input_tokens": int(r_cached),
                   "output_tokens": int(r_out), "reasoning_tokens": int(r_reasoning)}
        return ledger, results

    def unreconciled(self, provider: str, limit: int = 100) -> list[int]:
        """Collected batches of `provider` with no reconciliation yet, oldest first."""
        with self._pool.connection() as conn:
            return [r[0] for r in conn.execute(sql.UNRECONCILED_BATCHES, {"provider": provider, "limit": limit})]

    def record_reconciliation(self, row: Mapping[str, Any]) -> None:
        params = {**row, "ledger": Jsonb(row["ledger"]), "results": Jsonb(row["results"]),
                  "provider_usage": Jsonb(row["provider_usage"]) if row.get("provider_usage") is not None
                  else None}
        with self._pool.connection() as conn:
            conn.execute(sql.UPSERT_RECONCILIATION, params)

    def reconciliations(self) -> list[dict[str, Any]]:
        return self._rows(sql.RECONCILIATIONS)
