"""`forge work`: the realtime executor as a long-running process, and the signals that stop a worker.

SIGTERM / SIGINT stop claiming (an orchestrator's rolling update, Ctrl-C); realtime calls in flight get
`drain_s` to finish, the rest are released to the queue with their attempt given back, so no lease is left
to expire. A SIGKILL leaves leases that expire and are claimed again (fenced, so every job still ends once).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import replace

from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.providers.keyring import KeyRing
from forge_dagster.core.realtime.executor import RealtimeConfig, RealtimeExecutor
from forge_dagster.core.realtime.recording import RealtimeStats
from forge_dagster.core.store import ForgeStore


def stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Set `stop` on SIGTERM / SIGINT (main thread only); returns a function restoring the handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def run_realtime_worker(
    store: ForgeStore, *, concurrency: int = 64, until_idle: bool = False, max_jobs: int | None = None,
    ring: KeyRing | None = None, stop: threading.Event | None = None, drain_s: float | None = None,
) -> RealtimeStats:
    """Run realtime jobs from `store` with the keys from the environment until stopped (or idle). The
    processors are the store's registry (synced from the YAML), so every version a job pins is known.
    `drain_s`: how long calls in flight may finish once stopped (the executor's default when None)."""
    stop = stop or threading.Event()
    restore = stop_on_signals(stop)
    config = RealtimeConfig(concurrency=concurrency)
    if drain_s is not None:
        config = replace(config, drain_s=drain_s)
    try:
        executor = RealtimeExecutor(store, load_catalog(store), ring or KeyRing.from_env(), config)
        return executor.run_sync(until_idle=until_idle, stop=stop, max_jobs=max_jobs)
    finally:
        restore()
