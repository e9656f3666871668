"""Provider faults on the realtime path: the executor behind `forge work`, in this process, on
realtime jobs against the simulator. A watcher can lift a fault once it has bitten (a storm that passes,
a quota refilled), as the provider would."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.realtime.calls import CallPolicy
from forge_dagster.core.store import ForgeStore
from tests.chaos import conservation
from tests.chaos.batch_faults import FAST_PROBES, FaultReport
from tests.chaos.harness import enqueue_realtime, fresh_sim

CONFIG = RealtimeConfig(concurrency=16, key_refresh_s=0.1, retry_base_delay_s=0.05, drain_s=2.0,
                        call=CallPolicy(pause=FAST_PROBES))

# (sim, store) -> True once the fault has bitten and has been lifted
Lift = Callable[[object, ForgeStore], bool]


def lift_when(bitten: Callable[[object, ForgeStore], bool], lift: Callable[[object], None]) -> Lift:
    """A watcher step: once `bitten(sim, store)`, call `lift(sim)` and report done."""
    def step(sim, store: ForgeStore) -> bool:
        if bitten(sim, store):
            lift(sim)
            return True
        return False

    return step


def statuses(sim, *codes: int) -> int:
    """How many provider calls the simulator answered with one of `codes`."""
    return sum(1 for r in sim.requests() if r["status"] in codes)


def other_application_at_the_limit(rpm: int, free_in_s: float = 3.0) -> Callable[[object], None]:
    """Another application filled the simulator key's window (`rpm` calls in the last 60 - free_in_s
    seconds), so the next slot frees in `free_in_s`: Forge's first calls meet a 429 storm. The simulator is
    in this process, and its limiter is told so directly."""
    def before(sim) -> None:
        from forge_dagster.core.providers.keyring import SIMULATOR_KEY
        from forge_dagster.simulator.dice import key_id

        now, span = sim.state.now(), 60.0 - free_in_s
        for i in range(rpm):
            sim.state.limiter.check("openai", key_id(SIMULATOR_KEY), 0, rpm, None, now - span + i * span / rpm)

    return before


def key_paused(sim, store: ForgeStore) -> bool:
    row = store.keys.get("openai", "simulator")
    return row is not None and row["state"] == "paused"


def run_realtime_fault(
    store: ForgeStore, sim, name: str, *, jobs: int, knobs: dict | None = None, max_attempts: int = 3,
    lift: Lift | None = None, timeout_s: float = 60.0, call_timeout_s: float = 30.0,
    config: RealtimeConfig = CONFIG, ring_env: dict[str, str] | None = None,
    before: Callable[[object], None] | None = None,
) -> FaultReport:
    """Enqueue `jobs` realtime jobs, set the `knobs`, run the executor until no realtime job is open.
    `ring_env`: the key environment (default: none, the simulator's key); `before(sim)` runs just before."""
    fresh_sim(sim, **(knobs or {}))
    enqueue_realtime(store, jobs, max_attempts=max_attempts)
    report = FaultReport(name, "realtime", jobs)
    ring = KeyRing(keys_from_env(ring_env or {}, simulator_url=sim.url, timeout_s=call_timeout_s))
    ring.port(ring.for_provider("openai")[0])  # the SDK loads now, not while a window drains
    if before is not None:
        before(sim)
    executor = RealtimeExecutor(store, load_catalog(store), ring, replace(config))
    stop, failure = threading.Event(), []

    def work() -> None:
        try:
            executor.run_sync(until_idle=True, stop=stop)
        except BaseException as exc:  # reported below
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"chaos-{name}", daemon=True)
    started = time.monotonic()
    thread.start()
    lifted = lift is None
    while thread.is_alive() and time.monotonic() - started < timeout_s:
        if not lifted:
            lifted = lift(sim, store)
        thread.join(0.1)
    stop.set()
    thread.join(30)
    if failure:
        raise failure[0]
    report.elapsed_s = time.monotonic() - started
    report.provider_calls = len(sim.requests())
    report.errors.update({"rate_limited": executor.stats.rate_limited, "keys_paused": executor.stats.keys_paused,
                          "call_retries": executor.stats.call_retries})
    with store.transaction() as conn:
        report.conservation = conservation.check(conn)
    return report
