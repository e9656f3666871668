"""Provider keys in the store: registration, pause / probe / resume with their outbox notices, provider
outages (every key paused: told once), batch submission holds and the key each batch goes out with.

Reached as `ForgeStore.keys`; it shares the store's connection pool. Outbox rows are written in the same
transaction as the state change they announce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from forge_dagster.core.store import keys_sql
from forge_dagster.core.store.outbox_store import OutboxRepository
from forge_dagster.core.store.types import OutboxMessage

KEY_PAUSED = "key.paused"
KEY_RESUMED = "key.resumed"
ALL_KEYS_PAUSED = "provider.all_keys_paused"
KEYS_AVAILABLE = "provider.keys_available"
SUBMISSION_HELD = "batch.submission_held"


@dataclass(frozen=True)
class KeyRecord:
    """A key as the store knows it: never the key itself."""

    provider: str
    alias: str
    masked: str
    fingerprint: str


@dataclass(frozen=True)
class PauseResult:
    paused: bool  # False: the key was already paused (someone else got there first)
    until: datetime | None = None
    probe_count: int = 0
    all_paused: bool = False  # this pause started an outage of the whole provider (told now)


class KeyRepository:
    def __init__(self, pool, outbox: OutboxRepository) -> None:
        self._pool, self._outbox = pool, outbox

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params or {}).fetchall()

    # -- keys ------------------------------------------------------------------------------------
    def register(self, keys: Sequence[KeyRecord]) -> dict[tuple[str, str], str]:
        """Insert or refresh key rows; returns {(provider, alias): state}."""
        states = {}
        with self._pool.connection() as conn:
            for k in keys:
                params = {"provider": k.provider, "alias": k.alias, "masked": k.masked,
                          "fingerprint": k.fingerprint}
                states[(k.provider, k.alias)] = conn.execute(keys_sql.UPSERT_KEY, params).fetchone()[0]
        return states

    def all(self) -> list[dict[str, Any]]:
        """Every key row (provider, alias, masked, state, reason, paused_until, probe_count, ...)."""
        return self._rows(keys_sql.LIST_KEYS)

    def get(self, provider: str, alias: str) -> dict[str, Any] | None:
        rows = self._rows(keys_sql.GET_KEY, {"provider": provider, "alias": alias})
        return rows[0] if rows else None

    def pause(
        self, provider: str, alias: str, reason: str, *, base_s: float, cap_s: float, min_s: float = 0.0,
    ) -> PauseResult:
        """Pause an active key until its next probe; writes `key.paused`, and `provider.all_keys_paused`
        when it was the provider's last active key (once per outage)."""
        params = {"provider": provider, "alias": alias, "reason": reason[:500], "base_s": float(base_s),
                  "cap_s": float(cap_s), "min_s": float(min_s)}
        with self._pool.connection() as conn:
            conn.execute(keys_sql.LOCK_PROVIDER_KEYS, params)
            row = conn.execute(keys_sql.PAUSE_KEY, params).fetchone()
            if row is None:
                return PauseResult(False)
            probe_count, until = row
            messages = [OutboxMessage(KEY_PAUSED, f"key:{provider}:{alias}", {
                "provider": provider, "alias": alias, "reason": reason[:500], "probe_count": probe_count,
                "next_probe_at": until.isoformat()})]
            all_paused = False
            if conn.execute(keys_sql.COUNT_ACTIVE_KEYS, params).fetchone()[0] == 0:
                all_paused = conn.execute(keys_sql.START_OUTAGE, params).fetchone() is not None
                if all_paused:
                    messages.append(OutboxMessage(ALL_KEYS_PAUSED, f"provider:{provider}", {
                        "provider": provider, "reason": reason[:500],
                        "message": f"every {provider} key is paused; its jobs wait (none fail) until a "
                                   "probe brings a key back"}))
            self._outbox.write(messages, conn=conn)
        return PauseResult(True, until, probe_count, all_paused)

    def claim_due_probes(self, *, limit: int = 20, budget_s: float = 60.0) -> list[dict[str, Any]]:
        """Paused keys whose probe is due, claimed for `budget_s` so no one else probes them meanwhile."""
        return self._rows(keys_sql.CLAIM_DUE_PROBES, {"limit": limit, "budget_s": float(budget_s)})

    def resume(self, provider: str, alias: str) -> bool:
        """The probe answered: back in service (writes `key.resumed`). False if it was not paused."""
        params = {"provider": provider, "alias": alias}
        with self._pool.connection() as conn:
            row = conn.execute(keys_sql.RESUME_KEY, params).fetchone()
            if row is None:
                return False
            self._outbox.write([OutboxMessage(KEY_RESUMED, f"key:{provider}:{alias}", {
                "provider": provider, "alias": alias, "probes": row[0], "paused_for": row[1]})], conn=conn)
        return True

    def probe_failed(self, provider: str, alias: str, error: str, *, base_s: float, cap_s: float) -> datetime | None:
        """Record a failed probe and push the next one further out; returns its time."""
        params = {"provider": provider, "alias": alias, "error": error[:500], "base_s": float(base_s),
                  "cap_s": float(cap_s)}
        with self._pool.connection() as conn:
            row = conn.execute(keys_sql.PROBE_FAILED, params).fetchone()
        return row[1] if row else None

    def confirm(self, provider: str, alias: str) -> bool:
        """A real call succeeded on the key: its pause episode (and any provider outage) is over."""
        params = {"provider": provider, "alias": alias}
        with self._pool.connection() as conn:
            confirmed = conn.execute(keys_sql.CONFIRM_KEY, params).fetchone() is not None
            if conn.execute(keys_sql.END_OUTAGE, params).fetchone() is not None:
                self._outbox.write([OutboxMessage(KEYS_AVAILABLE, f"provider:{provider}", {
                    "provider": provider, "alias": alias})], conn=conn)
        return confirmed

    def outages(self) -> list[dict[str, Any]]:
        """Providers whose every key is paused, with since when."""
        return self._rows(keys_sql.LIST_OUTAGES)

    # -- batch submission holds ------------------------------------------------------------------
    def hold_submissions(self, provider: str, model: str, reason: str) -> bool:
        """Hold batch submission for `model` until its in-flight batches drain; True if newly held (then
        `batch.submission_held` is written to the outbox, once per hold)."""
        params = {"provider": provider, "model": model, "reason": reason[:500]}
        with self._pool.connection() as conn:
            row = conn.execute(keys_sql.HOLD_SUBMISSIONS, params).fetchone()
            if row is not None:
                self._outbox.write([OutboxMessage(SUBMISSION_HELD, f"hold:{provider}:{model}", {
                    "provider": provider, "model": model, "reason": reason[:500], "in_flight_batches": row[0],
                    "message": f"batch submission for {provider} {model} waits until its in-flight batches "
                               "end; its jobs wait (none fail)"})], conn=conn)
        return row is not None

    def holds(self) -> list[dict[str, Any]]:
        return self._rows(keys_sql.LIST_HOLDS)

    def release_drained_holds(self) -> list[tuple[str, str]]:
        """End the holds whose model has no batch in flight any more; returns them."""
        return [(r["provider"], r["model"]) for r in self._rows(keys_sql.RELEASE_DRAINED_HOLDS)]

    def in_flight(self, provider: str, model: str) -> int:
        """Batches of `model` the provider may still be working on (their tokens are enqueued)."""
        with self._pool.connection() as conn:
            return int(conn.execute(keys_sql.IN_FLIGHT_BATCHES, {"provider": provider, "model": model}).fetchone()[0])

    def in_flight_beside(self, batch_id: int) -> int:
        """Other batches of the batch's model that were in flight when it was submitted."""
        with self._pool.connection() as conn:
            return int(conn.execute(keys_sql.IN_FLIGHT_BESIDE, {"batch_id": batch_id}).fetchone()[0])

    # -- batches and their keys ------------------------------------------------------------------
    def set_batch_key(self, batch_id: int, alias: str) -> None:
        """Record the key a batch in `submitting` is about to go out with."""
        with self._pool.connection() as conn:
            conn.execute(keys_sql.SET_BATCH_KEY, {"batch_id": batch_id, "alias": alias})

    def batch_keys(self, batch_ids: Sequence[int]) -> dict[int, str | None]:
        """{batch id: alias of the key it was submitted with (None: not recorded)}."""
        return {r["id"]: r["key_alias"] for r in self._rows(keys_sql.BATCH_KEYS, {"ids": list(batch_ids)})}
