"""A key's slots on its shared pacing schedule, reserved in blocks: one statement in the store reserves the
next n slots (n: the calls waiting for one now, at most `max_block` and `span_s` ahead), this process hands
them out in order, and gives the unused ones back when it closes.

The block never admits more than single reservations would (see store/pacing_sql.RESERVE_SLOTS): its slots
are spaced by the larger of the request and token intervals, a slot is used at most once and never before
its time, and one that came due more than `burst_s` ago is dropped, as a single late slot is. Slots are
times on the schedule's clock, mapped onto this one by the offset seen on the quickest round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol

from forge_dagster.core.store.types import Grant

MAX_BLOCK = 32
SPAN_S = 1.0


class SharedSchedule(Protocol):
    """One key's pacing shared by every process using it (blocking calls: run them off the event loop)."""

    def reserve(self, *, rpm: int | None, tpm: int | None, tokens: int, correction: float, void: bool,
                headroom: float, burst_s: float, slots: int = 1) -> Grant: ...

    def give_back(self, grant: Grant, unused: int) -> bool: ...

    def block(self, seconds: float) -> int: ...


class SlotBank:
    """Slots reserved ahead for this process's calls on one key."""

    def __init__(self, shared: SharedSchedule, *, max_block: int = MAX_BLOCK, span_s: float = SPAN_S) -> None:
        self.shared, self.max_block, self.span_s = shared, max_block, span_s
        self.waiting = 0  # calls waiting for a slot (block sizing)
        self.reservations = 0  # statements sent
        self.slots_reserved = 0
        self._slots: deque[float] = deque()
        self._grant: Grant | None = None  # the block the banked slots came from
        self._tokens = 0  # the tokens each banked slot was reserved for
        self._epoch = -1  # the limiter's epoch the bank belongs to
        self._offset_s = 0.0  # this machine's clock minus the schedule's, from the quickest round trip
        self._best_rtt_s = float("inf")
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def lock(self) -> asyncio.Lock:
        """One fetch at a time on this event loop (the others take from the block it brings)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def block_size(self, step_s: float) -> int:
        """Slots for the next reservation: one per waiting call, within `max_block` and `span_s` ahead."""
        n = min(self.max_block, max(1, self.waiting))
        if step_s > 0:
            n = min(n, max(1, int(self.span_s / step_s)))
        return n

    def take(self, epoch: int, tokens: int, burst_s: float) -> tuple[float, int] | None:
        """The next banked slot as (seconds to wait for it, tokens to correct: this call's estimate minus
        what the slot was reserved for), or None when the bank is empty or void (the limits changed)."""
        if epoch != self._epoch:
            self._slots.clear()
            return None
        now = time.time()
        while self._slots:
            wait = self._slots.popleft() + self._offset_s - now
            if wait >= -burst_s:
                return wait, tokens - self._tokens
        return None  # the rest came due too long ago: passed unused, as a late single slot would

    async def reserve(self, slots: int, *, rpm: int | None, tpm: int | None, tokens: int, correction: float,
                      void: bool, headroom: float, burst_s: float) -> Grant:
        """Reserve `slots` slots in the store (off the event loop); learns the clock offset."""
        sent = time.time()
        grant = await asyncio.to_thread(
            self.shared.reserve, rpm=rpm, tpm=tpm, tokens=max(tokens, 0), correction=correction, void=void,
            headroom=headroom, burst_s=burst_s, slots=slots)
        received = time.time()
        if received - sent < self._best_rtt_s:
            # Mapped by the offset seen on the quickest round trip (error at most half of it), not by "wait
            # from when the answer came": answers delayed by a busy moment would push early slots late.
            self._best_rtt_s = received - sent
            self._offset_s = (sent + received) / 2 - grant.now
        self.reservations += 1
        self.slots_reserved += grant.slots
        return grant

    def keep(self, grant: Grant, epoch: int, tokens: int) -> None:
        """Bank a block's slots (the limiter's epoch as it is once the block's generation was seen)."""
        self._slots = deque(grant.times())
        self._grant, self._epoch, self._tokens = grant, epoch, max(tokens, 0)

    def give_back(self) -> bool:
        """Return the banked slots to the shared schedule (blocking: call it off the event loop)."""
        grant, unused = self._grant, len(self._slots)
        self._slots.clear()
        self._grant = None
        if grant is None or unused == 0:
            return False
        # The block's first slot was taken when it came; without it the schedule could move back past
        # where a single reservation would have left it.
        return self.shared.give_back(grant, min(unused, grant.slots - 1))
