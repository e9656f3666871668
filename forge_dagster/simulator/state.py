"""Everything the simulator remembers: config, dice, limits, stores, the request log and Slack messages."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from forge_dagster.simulator.config import SimConfig
from forge_dagster.simulator.dice import Dice, digest
from forge_dagster.simulator.generation import estimate_tokens
from forge_dagster.simulator.limits import QuotaLedger, RateLimiter

_CACHE_TTL_S = {"5m": 300.0, "1h": 3600.0}
LOG_LIMIT = 100_000  # the request log keeps the most recent entries


class SimState:
    """Shared, thread-safe state of one simulator. Stores attach themselves as attributes."""

    def __init__(self, seed: int, config: SimConfig) -> None:
        self.config = config
        self.dice = Dice(seed)
        self.limiter = RateLimiter()
        self.quota = QuotaLedger()
        self.lock = threading.RLock()
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)
        self._slack: list[Any] = []
        self._prompt_prefixes: set[str] = set()
        self._cache_entries: dict[str, float] = {}  # Anthropic cache marker -> expiry time
        # Imported here: the stores import generation/format modules that must not import state.
        from forge_dagster.simulator.anthropic_batches import AnthropicStore
        from forge_dagster.simulator.ollama import OllamaStore
        from forge_dagster.simulator.openai_batches import OpenAIStore

        self.openai = OpenAIStore(self)
        self.anthropic = AnthropicStore(self)
        self.ollama = OllamaStore(self)

    @property
    def seed(self) -> int:
        return self.dice.seed

    def configure(self, **knobs: Any) -> SimConfig:
        """Merge knobs into the config (ValueError on unknown names or bad values)."""
        with self.lock:
            self.config = self.config.merged(**knobs)
            return self.config

    def reset(self) -> None:
        """Forget batches, files, the log, Slack messages, counters and quota use; keep the config."""
        with self.lock:
            self.dice.reset()
            self.limiter.reset()
            self.quota.refill()
            self._log.clear()
            self._slack.clear()
            self._prompt_prefixes.clear()
            self._cache_entries.clear()
            self.openai.clear()
            self.anthropic.clear()
            self.ollama.clear()

    def occurrence(self, kind: str, fp: str, active: bool) -> int:
        """How often this request was seen before, counted only while a fault that uses it is switched on
        (so a fault-free run keeps no per-request memory)."""
        return self.dice.occurrence(f"{kind} {fp}") if active else 0

    def content_faults_on(self, in_batch: bool = False) -> bool:
        cfg = self.config
        rates = [cfg.malformed_rate, cfg.schema_violation_rate, cfg.truncation_rate, cfg.refusal_rate]
        return any(rates) or (in_batch and cfg.line_4xx_rate > 0)

    def log(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self._log.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self._log]

    def add_slack(self, payload: Any) -> None:
        with self.lock:
            self._slack.append(payload)

    def slack_messages(self) -> list[Any]:
        with self.lock:
            return list(self._slack)

    def cached_tokens(self, provider: str, key: str, prefix: str) -> int:
        """Automatic prompt caching: a prefix of 1024+ tokens seen before for this key is served from cache
        (in 128-token steps)."""
        tokens = estimate_tokens(prefix) if prefix else 0
        if tokens < self.config.cache_min_tokens:
            return 0
        marker = digest(provider, key, prefix)
        with self.lock:
            if marker in self._prompt_prefixes:
                return tokens // 128 * 128
            self._prompt_prefixes.add(marker)
            return 0

    def cache_breakpoint(self, key: str, prefix: str, ttl: str) -> tuple[int, int]:
        """Anthropic prompt caching at a `cache_control` breakpoint: (tokens read, tokens written). The
        first request of a prefix writes it; later ones read it while it lives (each read refreshes its
        TTL); a prefix shorter than `cache_min_tokens` is neither written nor read."""
        tokens = estimate_tokens(prefix) if prefix else 0
        if tokens < self.config.cache_min_tokens:
            return 0, 0
        marker = digest("anthropic", key, prefix)
        now = self.now()
        with self.lock:
            expires = self._cache_entries.get(marker)
            alive = expires is not None and expires > now
            self._cache_entries[marker] = max(expires or 0.0, now + _CACHE_TTL_S.get(ttl, 300.0))
        return (tokens, 0) if alive else (0, tokens)

    def now(self) -> float:
        """The simulator's clock: wall time plus the `clock_offset_s` knob."""
        return time.time() + self.config.clock_offset_s
