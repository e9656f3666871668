"""Client-side rate limits for one provider key, and the retry backoff policy.

A `KeyLimiter` paces requests and tokens per minute with GCRA (a reservation per call: no polling, FIFO,
no burst at start), a little under the limit (`headroom`) so a provider's sliding window never sees more
than its limit. Limits come from configuration and are tightened by the provider's rate-limit headers
(OpenAI `x-ratelimit-*`, Anthropic `anthropic-ratelimit-*`); with neither, the first call goes alone
and its headers set the pace. A 429 blocks the whole key until its `retry-after` has passed, so a storm
costs one wait for everyone instead of a retry per waiting call. Token use is estimated before a call
and corrected by what the provider counted after it.

Alone, a limiter paces one process. Given a `SharedSchedule` (store/pacing_store.py: the key's row in
the store), every slot is taken from that one schedule, so all the processes calling with a key together
stay within its limits: slots are reserved in blocks (slot_bank.py: one round trip for the calls waiting
now), and each round trip carries this process's news (token corrections, changed limits); a 429 or
exhausted headers block the key for everyone at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from forge_dagster.core.providers.slot_bank import SharedSchedule, SlotBank

log = logging.getLogger(__name__)

WINDOW_S = 60.0
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, and how many retries one call may make."""

    base_s: float = 0.5
    cap_s: float = 30.0
    max_retries: int = 8

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** max(0, retry - 1)))


@dataclass(frozen=True)
class HeaderLimits:
    """What a response's rate-limit headers say (None: not said)."""

    rpm: int | None = None
    tpm: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None


def go_duration_s(text: str) -> float | None:
    """OpenAI's reset durations ("20ms", "1.5s", "6m0s") in seconds."""
    parts = _GO_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _reset_s(value: str | None, now: float) -> float | None:
    if not value:
        return None
    seconds = go_duration_s(value)
    if seconds is not None:
        return seconds
    try:  # Anthropic: an RFC 3339 time
        return max(0.0, datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - now)
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_limit_headers(headers: Mapping[str, str], *, now: float | None = None) -> HeaderLimits:
    """Read OpenAI `x-ratelimit-*` or Anthropic `anthropic-ratelimit-*` headers."""
    h = {k.lower(): v for k, v in headers.items()}
    now = time.time() if now is None else now
    if "x-ratelimit-limit-requests" in h or "x-ratelimit-limit-tokens" in h:
        def get(kind: str, field: str) -> str | None:
            return h.get(f"x-ratelimit-{field}-{kind}")
    else:
        def get(kind: str, field: str) -> str | None:
            value = h.get(f"anthropic-ratelimit-{kind}-{field}")
            if value is None and kind == "tokens":
                value = h.get(f"anthropic-ratelimit-input-tokens-{field}")
            return value
    return HeaderLimits(
        rpm=_int(get("requests", "limit")), tpm=_int(get("tokens", "limit")),
        remaining_requests=_int(get("requests", "remaining")), remaining_tokens=_int(get("tokens", "remaining")),
        reset_requests_s=_reset_s(get("requests", "reset"), now), reset_tokens_s=_reset_s(get("tokens", "reset"), now),
    )


@dataclass
class LimiterStats:
    admitted: int = 0
    rate_limited: int = 0  # 429s reported
    blocked_s: float = 0.0  # time the key was blocked by retry-after / exhausted headers
    tightened: int = 0


class KeyLimiter:
    """Requests and tokens per minute for one provider key, paced; shared by every call on that key
    (and, with a `SharedSchedule`, by every process)."""

    def __init__(
        self, rpm: int | None = None, tpm: int | None = None, *, headroom: float = 0.97, burst_s: float = 0.25,
        learn: bool = True, clock: Callable[[], float] = time.monotonic, shared: SharedSchedule | None = None,
    ) -> None:
        self.configured_rpm, self.configured_tpm = rpm, tpm
        self.rpm, self.tpm = rpm, tpm
        self.headroom, self.burst_s, self.clock = headroom, burst_s, clock
        self.shared = shared  # set through `share`
        self.bank: SlotBank | None = None
        if shared is not None:
            self.share(shared)
        self.stats = LimiterStats()
        self.waiting = 0  # calls waiting for their slot
        self._tat_r: float | None = None  # theoretical arrival times (GCRA)
        self._tat_t: float | None = None
        self._blocked_until = 0.0
        self._last_admit = float("-inf")
        self._epoch = 0
        self._learning = learn and rpm is None and tpm is None
        self._first_out = False
        self._learned: asyncio.Event | None = None
        self._recent: deque[float] = deque()  # admissions in the last minute (for a 429 with no limit known)
        # Shared mode: news for the shared schedule, sent with the next reservation.
        self._generation = -1
        self._void_shared = False
        self._correction = 0.0
        self._pushes: set[asyncio.Task] = set()

    def share(self, shared: SharedSchedule) -> None:
        """Pace on `shared` (the key's schedule in the store) from now on."""
        self.shared, self.bank = shared, SlotBank(shared)

    # -- pacing ----------------------------------------------------------------------------------
    def _interval_r(self) -> float:
        return WINDOW_S / (self.rpm * self.headroom) if self.rpm else 0.0

    def _interval_t(self) -> float:
        return WINDOW_S / (self.tpm * self.headroom) if self.tpm else 0.0

    def _reserve(self, tokens: int, now: float) -> float:
        """Take the next slot for a call of `tokens` from this process's schedule; returns its time."""
        start = max(now, self._blocked_until)
        admit = start
        t_r, t_t = self._interval_r(), self._interval_t()
        tau_r = max(0.0, self.burst_s - t_r) if t_r else 0.0  # tolerance: a short burst after idling
        tau_t = self.burst_s if t_t else 0.0
        if t_r:
            if self._tat_r is None:  # no burst at start (a new worker adds none to its predecessor's),
                # nor after a change of limits: one interval after the last admission at the earliest
                self._tat_r = max(start, self._last_admit + t_r) + tau_r
            admit = max(admit, self._tat_r - tau_r)
            self._tat_r = max(self._tat_r, admit) + t_r
        if t_t:
            if self._tat_t is None:
                self._tat_t = start + tau_t
            admit = max(admit, self._tat_t - tau_t)
            self._tat_t = max(self._tat_t, admit) + max(tokens, 0) * t_t
        return admit

    async def _reserve_shared(self, tokens: int) -> float:
        """Take the next slot from the shared schedule (banked, or a new block of them); returns the seconds
        to wait for it. Adopts the shared limits when this process knows none, and voids this process's
        older reservations when another process changed the key (a 429, new limits). Falls back to the
        local schedule when the store does not answer."""
        bank = self.bank
        assert bank is not None
        bank.waiting += 1
        try:
            async with bank.lock():
                taken = bank.take(self._epoch, tokens, self.burst_s)
                if taken is None:
                    if not await self._fetch_block(bank, tokens):
                        now = self.clock()
                        return self._reserve(tokens, now) - now
                    taken = bank.take(self._epoch, tokens, self.burst_s)
        finally:
            bank.waiting -= 1
        if taken is None:
            return -2 * self.burst_s - 1.0  # came back too late to use: the caller takes another
        wait, extra_tokens = taken
        if extra_tokens and self.tpm:
            self._correction += extra_tokens  # the slot was reserved for the block's estimate
        return wait

    async def _fetch_block(self, bank: SlotBank, tokens: int) -> bool:
        """Reserve a block of slots into `bank`; False when the store does not answer."""
        correction, void = self._correction, self._void_shared
        self._correction, self._void_shared = 0.0, False
        slots = 1 if self._learning else bank.block_size(max(self._interval_r(), max(tokens, 0) * self._interval_t()))
        try:
            grant = await bank.reserve(slots, rpm=self.rpm, tpm=self.tpm, tokens=tokens, correction=correction,
                                       void=void, headroom=self.headroom, burst_s=self.burst_s)
        except Exception:
            log.warning("shared rate limit unavailable: pacing this process alone", exc_info=True)
            return False
        self._seen_generation(grant.generation)
        if self.rpm is None and self.tpm is None and (grant.rpm or grant.tpm):
            self.rpm, self.tpm = grant.rpm, grant.tpm  # another process learned them already
            self._stop_learning()
        bank.keep(grant, self._epoch, tokens)
        return True

    def give_back(self) -> None:
        """Return the slots reserved ahead and not used to the shared schedule (blocking)."""
        if self.bank is not None:
            self.bank.give_back()

    def _seen_generation(self, generation: int) -> None:
        if generation > self._generation:
            if self._generation >= 0:
                self._epoch += 1  # the key changed elsewhere: slots reserved before are void
            self._generation = generation

    def rate_per_s(self) -> float | None:
        """The request rate this limiter admits (None: no request limit known)."""
        return self.rpm * self.headroom / WINDOW_S if self.rpm else None

    async def acquire(self, tokens: int = 0) -> float:
        """Wait for this key's next slot for a call estimated at `tokens`; returns the seconds waited."""
        self.waiting += 1
        try:
            return await self._acquire(tokens)
        finally:
            self.waiting -= 1

    async def _acquire(self, tokens: int) -> float:
        began = self.clock()
        while True:
            if self._learning and self._first_out:  # the learning call is out: its headers set the pace
                if self._learned is None:
                    self._learned = asyncio.Event()
                await self._learned.wait()
                continue
            if self._learning:
                self._first_out = True
            if self.shared is not None:
                wait = await self._reserve_shared(tokens)
                if self._learning:
                    break  # no process knows this key's limits yet: this call goes alone to learn them
            elif self._learning:
                break  # the first call goes alone: its headers set the pace
            else:
                now = self.clock()
                wait = self._reserve(tokens, now) - now
            epoch, admit = self._epoch, self.clock() + wait
            if wait < -self.burst_s:
                continue  # the slot had passed when its reservation came back: lost, not spent in a burst
            if wait > 0:
                await asyncio.sleep(wait)
                if epoch != self._epoch:
                    continue  # the limits changed while waiting (a 429, tighter headers): slot void
                if self.clock() - admit > self.burst_s:
                    continue  # woken too late (a busy event loop): the slot is lost, not spent in a burst
            # Calls whose slots came due while the event loop was busy catch up within `burst_s`, but
            # never leave together: at least half a request interval between any two admissions.
            while (gap := self._last_admit + self._interval_r() / 2 - self.clock()) > 0:
                await asyncio.sleep(gap)
            if epoch == self._epoch:
                break
        now = self.clock()
        self._last_admit = now
        self.stats.admitted += 1
        self._recent.append(now)
        while self._recent and self._recent[0] < now - WINDOW_S:
            self._recent.popleft()
        return now - began

    def settle(self, estimated_tokens: int, counted_tokens: int) -> None:
        """Correct the token reservation of a finished call by what the provider counted for it."""
        if not self.tpm:
            return
        if self.shared is not None:
            self._correction += counted_tokens - estimated_tokens  # sent with the next reservation
        elif self._tat_t is not None:
            self._tat_t += (counted_tokens - estimated_tokens) * self._interval_t()

    # -- feedback --------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._epoch += 1
        # Reservations made under the old limits are void: waiters take new ones, paced from the end
        # of any block, with no burst.
        self._tat_r = self._tat_t = None
        self._void_shared = self.shared is not None

    def _stop_learning(self) -> None:
        if self._learning:
            self._learning = False
            if self._learned is not None:
                self._learned.set()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Tighten the limits from a response's rate-limit headers (never above the configured ones)."""
        seen = parse_limit_headers(headers)
        changed = False
        for name, header in (("rpm", seen.rpm), ("tpm", seen.tpm)):
            if header is None or header <= 0:
                continue
            configured = getattr(self, f"configured_{name}")
            value = min(configured, header) if configured else header
            if value != getattr(self, name):
                changed = changed or (getattr(self, name) is not None)
                setattr(self, name, value)
                self.stats.tightened += 1
        for remaining, reset in ((seen.remaining_requests, seen.reset_requests_s),
                                 (seen.remaining_tokens, seen.reset_tokens_s)):
            if remaining == 0 and reset:
                changed = self._block(reset) or changed
        if changed:
            self._changed()
        self._stop_learning()

    def call_finished(self) -> None:
        """A call ended (whatever the outcome): if it was the learning call and gave no headers, the
        key is taken as unlimited until told otherwise."""
        self._stop_learning()

    def _block(self, seconds: float) -> bool:
        until = self.clock() + seconds
        if until <= self._blocked_until:
            return False
        self.stats.blocked_s += until - max(self._blocked_until, self.clock())
        self._blocked_until = until
        if self.shared is not None:
            self._push_block(seconds)
        return True

    def _push_block(self, seconds: float) -> None:
        """Tell the shared schedule at once, so other processes stop calling too."""
        shared = self.shared
        assert shared is not None

        async def push() -> None:
            try:
                self._seen_generation(await asyncio.to_thread(shared.block, seconds))
            except Exception:
                log.warning("could not share a rate-limit block", exc_info=True)

        try:
            task = asyncio.get_running_loop().create_task(push())
        except RuntimeError:  # no event loop (headers seen outside a realtime run): nothing waits here
            return
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    def rate_limited(self, retry_after_s: float | None, *, fallback_s: float = 1.0) -> float:
        """A 429 on this key: block every call on it until `retry_after_s` (or `fallback_s`) has passed.
        With no limit known at all, the request rate drops to half of the last minute's. Returns the
        seconds until the key is free."""
        self.stats.rate_limited += 1
        if self.rpm is None and self.tpm is None and self._recent:
            self.rpm = max(1, len(self._recent) // 2)
            self.stats.tightened += 1
        wait = retry_after_s if retry_after_s is not None and retry_after_s > 0 else fallback_s
        self._block(wait)
        self._changed()
        self._stop_learning()
        return max(0.0, self._blocked_until - self.clock())
