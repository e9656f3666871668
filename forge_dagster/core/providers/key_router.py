"""Which key a call goes through: the processor's listed keys in order (fallbacks), or every key of its
provider in turn; paused keys are skipped. Key states are the store's, refreshed often and updated at
once when this process pauses a key itself."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from forge_dagster.core.models import Provider
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.providers.keyring import KeyRing, ProviderKey


class KeyRouter:
    """Picks an active key for a processor and remembers the store's key states."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._rows: dict[str, dict[str, Any]] = {}
        self._turn = itertools.count()

    def update(self, rows: Iterable[dict[str, Any]]) -> None:
        """Take the store's key rows as the current states."""
        self._rows = {f"{r['provider']}:{r['alias']}": dict(r) for r in rows}

    def row(self, key: ProviderKey) -> dict[str, Any] | None:
        return self._rows.get(key.name)

    def active(self, key: ProviderKey) -> bool:
        row = self._rows.get(key.name)
        return row is None or row["state"] == "active"

    def mark_paused(self, key: ProviderKey, until: datetime | None) -> None:
        """This process paused `key` (or found it paused): stop using it before the next refresh."""
        row = self._rows.setdefault(key.name, {"provider": str(key.provider), "alias": key.alias,
                                               "probe_count": 0})
        row.update(state="paused", paused_until=until or row.get("paused_until"), paused_at=datetime.now(UTC))

    def needs_confirm(self, key: ProviderKey) -> bool:
        """The key is on trial after a pause: its first real success ends the episode."""
        row = self._rows.get(key.name)
        return bool(row and row["state"] == "active" and (row.get("probe_count") or row.get("paused_at")))

    def mark_confirmed(self, key: ProviderKey) -> None:
        row = self._rows.get(key.name)
        if row is not None:
            row.update(probe_count=0, paused_at=None)

    def candidates(self, processor: Processor) -> list[ProviderKey]:
        """The keys a processor may use, first choice first (configured in this process)."""
        provider = Provider(processor.provider)
        if processor.keys:
            listed = (self.ring.get(provider, alias) for alias in processor.keys)
            return [k for k in listed if k is not None]
        keys = self.ring.for_provider(provider)
        if len(keys) > 1:  # no preference: share the load (each key has its own limits)
            start = next(self._turn) % len(keys)
            keys = keys[start:] + keys[:start]
        return keys

    def pick(self, processor: Processor, exclude: set[str] | frozenset[str] = frozenset()) -> ProviderKey | None:
        """The first active candidate not in `exclude`, or None when every one is paused."""
        return next((k for k in self.candidates(processor) if self.active(k) and k.name not in exclude), None)

    def seconds_until_probe(self, processor: Processor, *, floor_s: float = 0.05, cap_s: float = 3600.0) -> float:
        """How long the processor's jobs should wait: until the earliest probe of its paused keys."""
        now = datetime.now(UTC)
        waits = [(row["paused_until"] - now).total_seconds() for k in self.candidates(processor)
                 if (row := self._rows.get(k.name)) and row.get("paused_until") is not None]
        return min(cap_s, max(floor_s, min(waits, default=floor_s)))
