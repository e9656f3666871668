"""Rate limits (RPM/TPM over a 60 s sliding window, per provider and API key) and token quotas.

Headers follow each provider's format: OpenAI `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
with Go-style durations ("1.5s", "6m0s"), Anthropic `anthropic-ratelimit-{requests,tokens}-*` with RFC 3339
reset times. A 429 also carries `retry-after` (whole seconds) and `retry-after-ms`.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

WINDOW_S = 60.0


@dataclass
class RateDecision:
    allowed: bool
    limited_by: str | None = None  # "requests" | "tokens"
    retry_after_s: float = 0.0
    used: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it: 12ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    if minutes:
        return f"{int(minutes)}m{int(round(rest))}s"
    return f"{round(rest, 3):g}s"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RateLimiter:
    """Sliding-window request and token counters keyed by (provider, key_id)."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._events.clear()

    def check(self, provider: str, key: str, tokens: int, rpm: int | None, tpm: int | None,
              now: float) -> RateDecision:
        """Admit (and record) one request of `tokens`, or say how long to wait."""
        with self._lock:
            events = self._events.setdefault((provider, key), deque())
            while events and events[0][0] <= now - WINDOW_S:
                events.popleft()
            used_requests = len(events)
            used_tokens = sum(t for _, t in events)
            decision = RateDecision(True)
            if rpm and used_requests + 1 > rpm:
                decision = RateDecision(False, "requests", events[0][0] + WINDOW_S - now, used_requests)
            elif tpm and used_tokens + tokens > tpm:
                freed, wait = 0, WINDOW_S
                for ts, t in events:
                    freed += t
                    if used_tokens - freed + tokens <= tpm:
                        wait = ts + WINDOW_S - now
                        break
                decision = RateDecision(False, "tokens", wait, used_tokens)
            if decision.allowed:
                events.append((now, tokens))
                used_requests += 1
                used_tokens += tokens
            reset_s = (events[0][0] + WINDOW_S - now) if events else 0.0
            decision.headers = _headers(provider, rpm, tpm, used_requests, used_tokens, reset_s, now)
            if not decision.allowed:
                wait = max(decision.retry_after_s, 0.001)
                decision.retry_after_s = wait
                decision.headers["retry-after"] = str(max(1, math.ceil(wait)))
                decision.headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            return decision


def _headers(provider: str, rpm: int | None, tpm: int | None, used_requests: int, used_tokens: int,
             reset_s: float, now: float) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, limit, used in (("requests", rpm, used_requests), ("tokens", tpm, used_tokens)):
        if not limit:
            continue
        remaining = max(0, limit - used)
        if provider == "openai":
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(max(0.0, reset_s))
        else:
            names = [kind] if kind == "requests" else ["tokens", "input-tokens"]
            for name in names:
                headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
                headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
                headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339(now + max(0.0, reset_s))
    return headers


class QuotaLedger:
    """Tokens consumed per (provider, key_id) against SimConfig.quota_tokens."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def exhausted(self, provider: str, key: str, quota: int | None) -> bool:
        with self._lock:
            return quota is not None and self._used.get((provider, key), 0) >= quota

    def spend(self, provider: str, key: str, tokens: int) -> None:
        with self._lock:
            self._used[(provider, key)] = self._used.get((provider, key), 0) + tokens

    def used(self, provider: str, key: str) -> int:
        with self._lock:
            return self._used.get((provider, key), 0)

    def refill(self) -> None:
        with self._lock:
            self._used.clear()
