"""One helper for the values a process builds once and shares: pools, clients, servers, compiled processors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ProcessCache(Generic[K, V]):
    """Values shared by everything in this process, one per key (the configuration that built it).

    Why it exists: Dagster builds a resource anew for every run, step and sensor tick, and `forge work`, the
    console and the CLI call core from many threads; yet a connection pool, a Redis or Ollama client, a
    provider's TLS context or a compiled schema costs too much to build each time, and two pools for the
    same database would defeat the pool. So each lives here, keyed by every setting that shapes it, so a
    different configuration gets its own value and never a neighbour's.

    `get_or_create` builds under the cache's lock, so concurrent first uses build one value (a factory may
    use another cache; it must not use this one with another key while holding a lock that cache's
    users take first). With `max_entries`, the cache is emptied when full (for memos of unbounded keys).
    Values are never closed here: a cache of closable values registers its own `atexit` over `values()`.
    """

    def __init__(self, name: str, *, max_entries: int | None = None) -> None:
        self.name = name
        self.max_entries = max_entries
        self._lock = threading.RLock()
        self._values: dict[K, V] = {}

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        """The value for `key`, built by `factory()` on first use (under the lock: built once)."""
        with self._lock:
            if key in self._values:
                return self._values[key]
            value = factory()
            self._put(key, value)
            return value

    def get(self, key: K) -> V | None:
        """The value for `key` if one was built or put, else None."""
        with self._lock:
            return self._values.get(key)

    def put(self, key: K, value: V) -> None:
        """Remember `value` under `key` (replacing any before it)."""
        with self._lock:
            self._put(key, value)

    def _put(self, key: K, value: V) -> None:
        if self.max_entries is not None and key not in self._values and len(self._values) >= self.max_entries:
            self._values.clear()
        self._values[key] = value

    def values(self) -> Iterator[V]:
        """The values held now (a snapshot: safe while other threads add)."""
        with self._lock:
            return iter(list(self._values.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __repr__(self) -> str:
        return f"ProcessCache({self.name!r}, {len(self)} values)"
