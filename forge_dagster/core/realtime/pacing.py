"""Pacing shared by every process that calls with a provider key: the key's GCRA schedule lives in its
row in the store (`key_pacing`), so several `forge work --realtime` processes, or one beside a Dagster
run, together stay within the key's limits. PostgreSQL is what every Forge worker already shares
(embedded or external); a reservation costs one short UPDATE, taken off the event loop.
"""

from __future__ import annotations

from forge_dagster.core.providers.ratelimit import Grant
from forge_dagster.core.store import LeaseStore
from forge_dagster.core.store import pacing_sql as sql


class StoreSchedule:
    """One key's shared schedule (a `SharedSchedule` for `KeyLimiter`), keyed by the key's fingerprint."""

    def __init__(self, store: LeaseStore, provider: str, fingerprint: str) -> None:
        self.store, self.provider, self.fingerprint = store, provider, fingerprint

    def ensure(self, rpm: int | None, tpm: int | None) -> None:
        with self.store.transaction() as conn:
            conn.execute(sql.ENSURE_KEY_PACING, {"provider": self.provider, "fingerprint": self.fingerprint,
                                                 "rpm": rpm, "tpm": tpm})

    def reserve(self, *, rpm: int | None, tpm: int | None, tokens: int, correction: float, void: bool,
                headroom: float, burst_s: float) -> Grant:
        """The next slot (see pacing_sql.RESERVE_SLOT)."""
        params = {"provider": self.provider, "fingerprint": self.fingerprint, "rpm": rpm, "tpm": tpm,
                  "tokens": float(tokens), "correction": float(correction), "void": void,
                  "headroom": float(headroom), "burst_s": float(burst_s)}
        with self.store.statement() as conn:  # the row lock ends with the statement, whatever this process does
            admit_at, now, rpm_, tpm_, generation = conn.execute(sql.RESERVE_SLOT, params).fetchone()
        return Grant(float(admit_at), float(now), rpm_, tpm_, int(generation))

    def block(self, seconds: float) -> int:
        """Block the key for every process; returns the key's new generation."""
        with self.store.statement() as conn:
            row = conn.execute(sql.BLOCK_KEY, {"provider": self.provider, "fingerprint": self.fingerprint,
                                               "seconds": float(seconds)}).fetchone()
        return int(row[0]) if row else -1
