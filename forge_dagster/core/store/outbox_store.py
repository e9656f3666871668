"""The transactional outbox in the store: rows written beside the transition they announce, and the
relay's lanes that drain them (ready rows in order per key, failed and refused deliveries, lag).

Reached as `ForgeStore.outbox`; it shares the store's connection pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from forge_dagster.core.store import db
from forge_dagster.core.store import outbox_sql as sql
from forge_dagster.core.store.types import OutboxMessage, OutboxRow


@dataclass(frozen=True)
class ReadyRow(OutboxRow):
    """An outbox row a relay lane holds; `prev_id` is the previous undelivered row of its key, if any."""

    prev_id: int | None = None


class OutboxRepository:
    def __init__(self, pool) -> None:
        self._pool = pool

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params or {}).fetchall()

    # -- writing ---------------------------------------------------------------------------------
    def write(self, messages: Iterable[OutboxMessage], *, conn: psycopg.Connection | None = None) -> list[int]:
        """Write outbox rows (in the caller's transaction when `conn` is given)."""
        ids = []
        with db.use(self._pool, conn) as c:
            for m in messages:
                params = {"topic": m.topic, "key": m.key, "payload": Jsonb(m.payload)}
                ids.append(c.execute(sql.INSERT_OUTBOX, params).fetchone()[0])
        return ids

    # -- relay lanes -----------------------------------------------------------------------------
    def fetch_ready(
        self, conn: psycopg.Connection, topics: Sequence[str], *, include: bool, limit: int = 100
    ) -> list[ReadyRow]:
        """Lock the rows of the lane (topics in `topics` when `include`, else all others) that may be
        delivered now, in order per key. Only rows whose key predecessor is also held are returned.
        The transaction stays open while they are sent, so it may sit idle longer than the store's usual
        limit (RELAY_IDLE_LIMIT)."""
        conn.execute(sql.RELAY_IDLE_LIMIT)
        rows = conn.execute(sql.FETCH_READY_RUNS, {"topics": list(topics), "include": include,
                                                   "limit": limit}).fetchall()
        held: set[int] = set()
        ready = []
        for row_id, topic, key, payload, attempts, prev_id in rows:
            if prev_id is None or prev_id in held:
                held.add(row_id)
                ready.append(ReadyRow(row_id, topic, key, payload, attempts, prev_id))
        return ready

    def mark_delivered(self, conn: psycopg.Connection, ids: Sequence[int]) -> None:
        """Mark relayed rows (from `fetch_ready`) delivered, in the relay's transaction."""
        conn.execute(sql.MARK_DELIVERED, {"ids": list(ids)})

    def mark_attempt_failed(self, conn: psycopg.Connection, row_id: int, error: str, delay_s: float) -> None:
        """Record a failed delivery: the row is due again after `delay_s`, its last error kept."""
        conn.execute(sql.MARK_ATTEMPT_FAILED, {"id": row_id, "error": error[:2000], "delay": delay_s})

    def mark_refused(self, conn: psycopg.Connection, refused: Sequence[tuple[int, str]]) -> None:
        """Close rows whose destination the callback policy refuses, each with its reason: never retried,
        not delivered (they count as refused in the metrics)."""
        if refused:
            conn.execute(sql.MARK_REFUSED, {"ids": [r[0] for r in refused], "reasons": [r[1][:2000] for r in refused]})

    def horizon(self) -> str:
        """A mark past every transaction running now (see `passed`)."""
        with self._pool.connection() as conn:
            return conn.execute(sql.HORIZON).fetchone()[0]

    def passed(self, horizon: str) -> bool:
        """Have all transactions that were running at `horizon` ended (their outbox rows now readable)?"""
        with self._pool.connection() as conn:
            return bool(conn.execute(sql.PASSED_HORIZON, {"horizon": horizon}).fetchone()[0])

    # -- reading ---------------------------------------------------------------------------------
    def lag(self) -> tuple[int, float]:
        """(undelivered rows, age in seconds of the oldest one)."""
        with self._pool.connection() as conn:
            n, age = conn.execute(sql.OUTBOX_LAG).fetchone()
        return int(n), float(age)

    def count_held(self, topics: Sequence[str], *, include: bool) -> int:
        """Undelivered rows of a lane (see `fetch_ready`)."""
        with self._pool.connection() as conn:
            return conn.execute(sql.COUNT_HELD, {"topics": list(topics), "include": include}).fetchone()[0]

    def undelivered(self, limit: int = 100) -> list[dict[str, Any]]:
        """Undelivered outbox rows, oldest first, with their attempts and last error."""
        return self._rows(sql.UNDELIVERED, {"limit": limit})

    def recent_refused(self, limit: int = 20) -> list[dict[str, Any]]:
        """Refused stamps, newest first: the job and the reason (which names the host and the address)."""
        return self._rows(sql.RECENT_REFUSED, {"limit": limit})

    def stats(self) -> dict[str, float]:
        with self._pool.connection() as conn:
            undelivered, lag, retrying, delivered, refused = conn.execute(sql.OUTBOX_STATS).fetchone()
        return {"undelivered": int(undelivered), "lag_s": float(lag), "retrying": int(retrying),
                "delivered": int(delivered), "refused": int(refused)}
