"""A mutex over the local GPU, held in Redis, with fencing tokens.

- Acquire is `SET key token NX PX ttl` with a random token; the fencing counter is then incremented by a
  script that checks the token, so each holder gets a number strictly greater than every earlier holder's.
  The counter lives in Redis but the highest fence seen lives in PostgreSQL: a mutex built with a
  `fence_floor` raises the counter above the stored maximum on acquire, so a Redis that lost the counter
  (FLUSHALL, a restart without persistence, a new FORGE_REDIS_URL) does not fence every write out.
- Release and extend run as Lua scripts that act only while the key still holds the caller's token: a
  holder that lost the lock can never delete or prolong someone else's.
- A renewal thread extends the lease every TTL/3 and signals loss at once (an `Event` and a callback)
  when an extension is refused.
- Waiters subscribe to a release channel and sleep until a release is published, or until the holder's
  TTL runs out (a crashed holder never publishes); they do not poll. A key without a TTL (set by hand)
  is waited on for one TTL of ours at a time.
- Results written under the lock carry a `Fence` (resource, number, a digest of the holder's token); the
  store rejects a write whose number is lower than one it has seen, or equal to it from another holder
  (see `KnowledgeRepository.advance_fence`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from forge_dagster.core.store.knowledge_types import Fence, LockLost

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 30_000
KEY_PREFIX = "forge:mutex"

# Give the holder a fencing number, but only while the lock is still its own; never one at or below
# ARGV[2], the highest number the store has recorded (the counter may have been lost with Redis's data).
_FENCE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local fence = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[2])
  if fence <= floor then
    fence = floor + 1
    redis.call('SET', KEYS[2], fence)
  end
  return fence
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LockTimeout(Exception):
    """The mutex was not acquired within the caller's deadline."""


def holder_digest(token: str) -> str:
    """A short digest of a lock token: stored with fenced writes instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass
class MutexStats:
    """How hard this process worked for the lock: attempts (SET NX calls) and releases heard."""

    attempts: int = 0
    wakeups: int = 0


def connect(url: str, *, timeout_s: float = 10.0) -> redis.Redis:
    """A Redis client for `url` (redis://, rediss:// or unix://); no call waits longer than `timeout_s`."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=min(5.0, timeout_s),
                                health_check_interval=30)


class Lease:
    """One holding of the mutex: its token, its fencing number, and the renewal that keeps it alive."""

    def __init__(self, mutex: GpuMutex, token: str, fence: int, ttl_ms: int) -> None:
        self.mutex, self.token, self.fence, self.ttl_ms = mutex, token, fence, ttl_ms
        self.lost = threading.Event()
        self.renewals = 0  # extensions made by the renewal thread
        self._released = threading.Event()
        self._renewer: threading.Thread | None = None
        self._on_lost: Callable[[Lease], None] | None = None

    @property
    def resource(self) -> str:
        """The name fenced writes are checked against."""
        return self.mutex.key

    @property
    def fencing(self) -> Fence:
        """The fence every result written under this lease carries."""
        return Fence(self.mutex.key, self.fence, holder_digest(self.token))

    def extend(self, ttl_ms: int | None = None) -> bool:
        """Push the expiry to now + TTL; False (and loss signalled) when the lock is no longer ours."""
        ok = bool(self.mutex._extend(keys=[self.mutex.key], args=[self.token, ttl_ms or self.ttl_ms]))
        if not ok:
            self._signal_lost()
        return ok

    def release(self) -> bool:
        """Delete the lock if it is still ours and wake the waiters; False when it was not ours any more."""
        self._released.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=5)
        keys, args = [self.mutex.key], [self.token, self.mutex.channel]
        return bool(self.mutex._release(keys=keys, args=args))

    def held(self) -> bool:
        """Whether Redis still holds this lease's token under the lock key."""
        value = self.mutex.redis.get(self.mutex.key)
        return value is not None and value.decode() == self.token

    def check(self) -> None:
        """Raise LockLost unless the lease is still held (call before writing a result)."""
        if self.lost.is_set() or not self.held():
            self._signal_lost()
            raise LockLost(f"{self.mutex.key}: lease {self.fence} is no longer held")

    def start_renewal(self, on_lost: Callable[[Lease], None] | None = None) -> None:
        """Extend every TTL/3 in a daemon thread until released; on refusal signal loss at once."""
        self._on_lost = on_lost
        self._renewer = threading.Thread(target=self._renew, name=f"gpu-mutex-renew-{self.fence}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        interval = self.ttl_ms / 3000.0
        valid_until = time.monotonic() + self.ttl_ms / 1000.0
        while not self._released.wait(interval):
            started = time.monotonic()
            try:
                if not self.extend():
                    return
                self.renewals += 1
                valid_until = started + self.ttl_ms / 1000.0
            except redis.RedisError as exc:
                # Redis unreachable: the lease may still be ours until its last known expiry.
                if time.monotonic() >= valid_until:
                    log.warning("gpu mutex: cannot renew lease %s (%s); treating it as lost", self.fence, exc)
                    self._signal_lost()
                    return

    def _signal_lost(self) -> None:
        first = not self.lost.is_set()
        self.lost.set()
        if not first:
            return
        log.warning("gpu mutex: lease %s on %s lost", self.fence, self.mutex.key)
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:  # noqa: BLE001 - a failing callback must not hide the loss
                log.exception("gpu mutex: on_lost callback failed")

    def __repr__(self) -> str:
        return f"Lease(key={self.mutex.key!r}, fence={self.fence}, ttl_ms={self.ttl_ms})"


class GpuMutex:
    """A named Redis mutex with fencing. `hold()` is the usual entry point."""

    def __init__(self, client: redis.Redis | str, name: str = "gpu", *, ttl_ms: int = DEFAULT_TTL_MS,
                 prefix: str = KEY_PREFIX, fence_floor: Callable[[str], int | None] | None = None) -> None:
        """`fence_floor(resource)` returns the highest fence the store has recorded for the lock (None:
        none yet); each acquire takes a number above it."""
        self.redis = connect(client) if isinstance(client, str) else client
        self.key = f"{prefix}:{name}"
        self.fence_key = f"{self.key}:fence"
        self.channel = f"{self.key}:released"
        self.ttl_ms = int(ttl_ms)
        self.stats = MutexStats()
        self.fence_floor = fence_floor
        self._fence = self.redis.register_script(_FENCE)
        self._release = self.redis.register_script(_RELEASE)
        self._extend = self.redis.register_script(_EXTEND)

    def try_acquire(self, *, ttl_ms: int | None = None) -> Lease | None:
        """One attempt: a Lease when the lock was free, else None. Does not start renewal."""
        ttl = int(ttl_ms or self.ttl_ms)
        token = secrets.token_hex(16)
        self.stats.attempts += 1
        if not self.redis.set(self.key, token, nx=True, px=ttl):
            return None
        fence = int(self._fence(keys=[self.key, self.fence_key], args=[token, self._floor()]))
        if fence == 0:  # lost between SET and the fence (frozen past the TTL): not ours after all
            return None
        return Lease(self, token, fence, ttl)

    def _floor(self) -> int:
        if self.fence_floor is None:
            return 0
        try:
            return int(self.fence_floor(self.key) or 0)
        except Exception as exc:  # noqa: BLE001 - the store will still refuse a stale fence
            log.warning("gpu mutex: cannot read the stored fence of %s (%s); using Redis's counter", self.key, exc)
            return 0

    def acquire(self, timeout_s: float | None = None, *, ttl_ms: int | None = None, renew: bool = True,
                on_lost: Callable[[Lease], None] | None = None) -> Lease:
        """Block until the lock is ours (or raise LockTimeout after `timeout_s`); renew it unless told not."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        lease = self.try_acquire(ttl_ms=ttl_ms)
        if lease is None:
            lease = self._wait_and_acquire(deadline, ttl_ms)
        if renew:
            lease.start_renewal(on_lost)
        return lease

    def _wait_and_acquire(self, deadline: float | None, ttl_ms: int | None) -> Lease:
        pubsub = self.redis.pubsub()
        pubsub.subscribe(self.channel)
        try:
            while True:
                # Tried again after subscribing, so a release published before the subscription is not missed.
                lease = self.try_acquire(ttl_ms=ttl_ms)
                if lease is not None:
                    return lease
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise LockTimeout(f"{self.key}: not acquired in time")
                if self._wait_for_release(pubsub, remaining):
                    self.stats.wakeups += 1
        finally:
            pubsub.close()

    def _wait_for_release(self, pubsub, remaining: float | None) -> bool:
        """Sleep until a release is published (True), or the holder's TTL or our deadline runs out."""
        pttl = self.redis.pttl(self.key)
        if pttl == -2:  # no holder now (released or expired between our attempt and here)
            holder_left = 0.0
        elif pttl == -1:  # a key without expiry (set by hand): wait for a release, one TTL of ours at a time
            holder_left = self.ttl_ms / 1000.0
        else:
            holder_left = pttl / 1000.0 + 0.005
        wait = holder_left if remaining is None else min(holder_left, remaining)
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            message = pubsub.get_message(timeout=left)
            if message and message.get("type") == "message":
                return True

    @contextmanager
    def hold(self, timeout_s: float | None = None, *, ttl_ms: int | None = None,
             on_lost: Callable[[Lease], None] | None = None) -> Iterator[Lease]:
        """Hold the mutex (renewed) for the block; released at the end even on error."""
        lease = self.acquire(timeout_s, ttl_ms=ttl_ms, on_lost=on_lost)
        try:
            yield lease
        finally:
            try:
                lease.release()
            except redis.RedisError:
                log.warning("gpu mutex: release of lease %s failed; it expires after its TTL", lease.fence)

    def holder(self) -> str | None:
        """The token of the current holder, if any (for operators and tests)."""
        value = self.redis.get(self.key)
        return None if value is None else value.decode()
