"""The live fleet in the store: `forge work` processes register, beat and stop; the console reads who is
alive, what each holds, the Dagster runs' leases and the lease takeovers of the last hour.

Reached as `ForgeStore.fleet`; it shares the store's connection pool.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from psycopg.rows import dict_row

from forge_dagster.core.store import db, fleet_sql

# A worker whose heartbeat is older than this is shown dead (it beats every few seconds).
STALE_AFTER_S = 30.0


class FleetRepository:
    def __init__(self, pool, owner: str) -> None:
        self._pool, self.owner = pool, owner

    def _rows(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()

    def register(self, kind: str, *, detail: str | None = None, owner: str | None = None) -> int:
        """Register this process as a worker of `kind`; returns its worker id."""
        params = {"kind": kind, "owner": owner or self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                  "detail": detail}
        with db.one_statement(self._pool) as conn:
            return conn.execute(fleet_sql.REGISTER_WORKER, params).fetchone()[0]

    def beat(self, worker_id: int, *, owner: str | None = None) -> bool:
        """Note the worker alive now (and the leases it holds); False once it was stopped."""
        with db.one_statement(self._pool) as conn:
            row = conn.execute(fleet_sql.BEAT_WORKER, {"id": worker_id, "owner": owner or self.owner}).fetchone()
        return row is not None

    def stop(self, worker_id: int) -> None:
        with db.one_statement(self._pool) as conn:
            conn.execute(fleet_sql.STOP_WORKER, {"id": worker_id})

    def workers(self, *, window_s: float = 3600.0, stale_s: float = STALE_AFTER_S) -> list[dict[str, Any]]:
        """Workers seen in the last `window_s`, newest first, each `alive` or not and what it holds now."""
        return self._rows(fleet_sql.RECENT_WORKERS, {"window_s": window_s, "stale_s": stale_s})

    def runs(self, *, window_s: float = 3600.0) -> list[dict[str, Any]]:
        """Leases of the Dagster runs seen in the last `window_s`, newest first."""
        return self._rows(fleet_sql.RECENT_RUN_LEASES, {"window_s": window_s})

    def takeovers(self, *, window_s: float = 3600.0) -> dict[str, int]:
        """Leases taken over in the last `window_s`: reclaimed by a claim after expiry, or swept."""
        row = self._rows(fleet_sql.TAKEOVERS_SINCE, {"window_s": window_s})[0]
        return {"reclaimed": int(row["reclaimed"]), "swept": int(row["swept"])}

    def prune(self, days: int = 7) -> int:
        with db.one_statement(self._pool) as conn:
            return conn.execute(fleet_sql.PRUNE_WORKERS, {"days": days}).rowcount
