"""One round of the relay's stamp lane: stamps sent in parallel, bounded per callback host.

Each host (host:port of the callback URL) gets at most `concurrency` stamps in flight and `rate` stamps a
second (a token bucket with a burst of `rate`, kept across rounds): a slow, flooded or unreachable
receiver holds only its own share of the relay, and the stamps for every other host go on. The rows of
one key go in order, one after the other; a failed row stops its key for the round. A host that refused
a connection fails the rest of its rows of the round without a try (they would fail too). Rows the
round leaves (rate spent, lane budget over) are untouched: due again next round, no attempt counted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from forge_dagster.core.ops.stamps import DeliveryError, DeliveryRefused
from forge_dagster.core.store.outbox_store import ReadyRow

DELIVERED, FAILED, REFUSED = "delivered", "failed", "refused"
MAX_TRACKED_HOSTS = 4096


@dataclass(frozen=True)
class Outcome:
    row: ReadyRow
    kind: str  # delivered, failed or refused
    error: DeliveryError | None = None


class HostBuckets:
    """A token bucket per host: `rate` tokens a second, at most `burst` kept (thread-safe)."""

    def __init__(self, rate: float, *, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self._clock = rate, max(1.0, burst if burst is not None else rate), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, host: str) -> bool:
        """Spend one token of `host` if it has one."""
        now = self._clock()
        with self._lock:
            if len(self._buckets) > MAX_TRACKED_HOSTS:  # forget hosts whose bucket has refilled anyway
                self._buckets = {h: (t, w) for h, (t, w) in self._buckets.items()
                                 if t + (now - w) * self.rate < self.burst}
            tokens, then = self._buckets.get(host, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[host] = (tokens, now)
                return False
            self._buckets[host] = (tokens - 1.0, now)
            return True


def callback_host(row: ReadyRow) -> str:
    """The host:port a stamp goes to ('' when its URL has none: the sender refuses it)."""
    try:
        return httpx.URL(str(row.payload.get("callback_url") or "")).netloc.decode().lower()
    except (httpx.InvalidURL, UnicodeError):
        return ""


@dataclass
class _HostRound:
    chains: deque[list[ReadyRow]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    down: DeliveryError | None = None  # a connection failure seen this round
    spent: bool = False  # the host's rate is used up for now


class StampLane:
    """Sends a round's stamps with `send` (a StampSender's), `concurrency` per host at once, `rate` per host
    per second, on `workers` threads."""

    def __init__(self, send: Callable[[ReadyRow], None], *, concurrency: int = 4, rate: float = 50.0,
                 workers: int = 8) -> None:
        self._send, self.concurrency = send, concurrency
        self.buckets = HostBuckets(rate)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="forge-stamps")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def send(self, rows: Sequence[ReadyRow], *, budget_s: float) -> list[Outcome]:
        """Send what the round may send of `rows` (in order per key); the outcome of each row tried."""
        deadline = time.monotonic() + budget_s
        chains: dict[str, list[ReadyRow]] = {}
        for row in rows:
            chains.setdefault(row.key, []).append(row)
        hosts: dict[str, _HostRound] = {}
        for chain in chains.values():
            hosts.setdefault(callback_host(chain[0]), _HostRound(deque())).chains.append(chain)
        futures = [self._pool.submit(self._drain_host, host, state, deadline)
                   for host, state in hosts.items() for _ in range(min(self.concurrency, len(state.chains)))]
        return [outcome for future in futures for outcome in future.result()]

    def _drain_host(self, host: str, state: _HostRound, deadline: float) -> list[Outcome]:
        """One of a host's `concurrency` senders: takes the host's chains one at a time until none is left,
        its rate is spent or the lane's budget is over."""
        outcomes: list[Outcome] = []
        while True:
            with state.lock:
                if not state.chains or state.spent:
                    return outcomes
                chain = state.chains.popleft()
            for row in chain:
                if time.monotonic() > deadline:
                    return outcomes
                if state.down is not None:
                    outcomes.append(Outcome(row, FAILED, state.down))
                    break
                if not self.buckets.take(host):
                    state.spent = True
                    break
                try:
                    self._send(row)
                except DeliveryRefused as exc:
                    outcomes.append(Outcome(row, REFUSED, exc))  # closed for good; the key's next row may go
                    continue
                except DeliveryError as exc:
                    if exc.host:
                        state.down = exc
                    outcomes.append(Outcome(row, FAILED, exc))
                    break
                except Exception as exc:  # noqa: BLE001 - one odd row must not undo its round's other outcomes
                    outcomes.append(Outcome(row, FAILED, DeliveryError(f"{host}: {type(exc).__name__}: {exc}")))
                    break
                outcomes.append(Outcome(row, DELIVERED))
