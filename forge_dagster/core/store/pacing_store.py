"""Pacing shared by every process that calls with a provider key: the key's GCRA schedule lives in its
row (`key_pacing`), so several `forge work` processes, or one beside a Dagster run, together stay within
the key's limits. A reservation of the next n slots costs one short statement (run it off the event loop);
unused slots can be given back.

Reached as `ForgeStore.pacing`; `schedule(provider, fingerprint)` is a `SharedSchedule` for `KeyLimiter`.
"""

from __future__ import annotations

from forge_dagster.core.store import db
from forge_dagster.core.store import pacing_sql as sql
from forge_dagster.core.store.types import Grant


class KeySchedule:
    """One key's shared schedule, keyed by the key's fingerprint."""

    def __init__(self, pool, provider: str, fingerprint: str) -> None:
        self._pool, self.provider, self.fingerprint = pool, provider, fingerprint

    def ensure(self, rpm: int | None, tpm: int | None) -> None:
        with self._pool.connection() as conn:
            conn.execute(sql.ENSURE_KEY_PACING, {"provider": self.provider, "fingerprint": self.fingerprint,
                                                 "rpm": rpm, "tpm": tpm})

    def reserve(self, *, rpm: int | None, tpm: int | None, tokens: int, correction: float, void: bool,
                headroom: float, burst_s: float, slots: int = 1) -> Grant:
        """The next `slots` slots (see pacing_sql.RESERVE_SLOTS)."""
        params = {"provider": self.provider, "fingerprint": self.fingerprint, "rpm": rpm, "tpm": tpm,
                  "tokens": float(tokens), "correction": float(correction), "void": void,
                  "headroom": float(headroom), "burst_s": float(burst_s), "n": max(1, int(slots))}
        with db.one_statement(self._pool) as conn:  # the row lock ends with the statement, whatever this process does
            admit_at, step, now, rpm_, tpm_, generation, tat_r, tat_t = conn.execute(sql.RESERVE_SLOTS,
                                                                                     params).fetchone()
        return Grant(float(admit_at), float(now), rpm_, tpm_, int(generation), params["n"], float(step),
                     tat_r, tat_t)

    def give_back(self, grant: Grant, unused: int) -> bool:
        """Return the last `unused` slots of `grant` to the schedule, if no reservation came after it."""
        if unused <= 0:
            return False
        params = {"provider": self.provider, "fingerprint": self.fingerprint, "slots": int(unused),
                  "step": grant.step, "generation": grant.generation, "tat_r": grant.tat_r, "tat_t": grant.tat_t}
        with db.one_statement(self._pool) as conn:
            return conn.execute(sql.RETURN_SLOTS, params).rowcount == 1

    def block(self, seconds: float) -> int:
        """Block the key for every process; returns the key's new generation."""
        with db.one_statement(self._pool) as conn:
            row = conn.execute(sql.BLOCK_KEY, {"provider": self.provider, "fingerprint": self.fingerprint,
                                               "seconds": float(seconds)}).fetchone()
        return int(row[0]) if row else -1


class PacingRepository:
    def __init__(self, pool) -> None:
        self._pool = pool

    def schedule(self, provider: str, fingerprint: str) -> KeySchedule:
        return KeySchedule(self._pool, provider, fingerprint)
