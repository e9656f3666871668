"""Deterministic chance for the simulator: every choice is a hash of the seed and what it is about.

No global RNG is used, so concurrent requests cannot change each other's outcome. A fault is decided from
(seed, fault kind, request fingerprint, how many times this same request was seen since the last reset):
the same request sequence gives the same faults for a seed, and a retry of a failed request gets a fresh
roll instead of failing forever.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from typing import Any


def digest(*parts: Any) -> str:
    """Hex sha256 of the parts, joined unambiguously."""
    text = "\x1f".join(p if isinstance(p, str) else json.dumps(p, sort_keys=True, default=str) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(obj: Any) -> str:
    """A short stable fingerprint of JSON-able data (key order does not matter)."""
    return digest(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str))[:24]


def unit(*parts: Any) -> float:
    """A number in [0, 1) fixed by the parts."""
    return int(digest(*parts)[:13], 16) / float(16**13)


def rng(*parts: Any) -> random.Random:
    """A private Random seeded from the parts (for generating content, never shared)."""
    return random.Random(int(digest(*parts)[:16], 16))


def key_id(api_key: str) -> str:
    """What the request log keeps instead of an API key: the first 12 hex of its sha256."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


class Dice:
    """Seeded fault decisions with per-fingerprint occurrence counting."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        # Ids differ between simulator instances (a restarted simulator must not hand out the ids of
        # batches a client already stored); answers and faults depend only on the seed.
        self._instance = os.urandom(6).hex()
        self._seen: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget occurrence counts; id counters go on so ids are never reused within a run."""
        with self._lock:
            self._seen.clear()

    def occurrence(self, fp: str) -> int:
        """How many times `fp` was seen before this call (0 the first time)."""
        with self._lock:
            n = self._seen.get(fp, 0)
            self._seen[fp] = n + 1
            return n

    def hit(self, kind: str, rate: float, *about: Any) -> bool:
        """True with probability `rate`, fixed by the seed, the fault kind and `about`."""
        return rate > 0 and unit(self.seed, kind, *about) < rate

    def choice(self, options: list[Any], *about: Any) -> Any:
        return options[int(unit(self.seed, "choice", *about) * len(options))]

    def new_id(self, prefix: str, kind: str, length: int = 24) -> str:
        """A fresh id, unique to this simulator instance."""
        with self._lock:
            n = self._counters.get(kind, 0)
            self._counters[kind] = n + 1
        return prefix + digest(self.seed, "id", self._instance, kind, n)[:length]
