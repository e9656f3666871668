"""The body of one worker process for the multi-process pacing test: its own store connections, key ring
and executor (as a `forge work` process has), run until no realtime job is open; reports what it did."""

from __future__ import annotations

from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.store import ForgeStore


def work(database_url: str, schema: str, simulator_url: str, rpm: int, concurrency: int, results) -> None:
    with ForgeStore(database_url, schema, pool_size=4) as store:
        ring = KeyRing(keys_from_env({"OPENAI_RPM": str(rpm)}, simulator_url=simulator_url, timeout_s=10))
        executor = RealtimeExecutor(store, load_catalog(store), ring, RealtimeConfig(concurrency=concurrency))
        limiter = ring.limiter(ring.for_provider("openai")[0])
        stats = executor.run_sync(until_idle=True)
        bank = limiter.bank  # the key's slots on its schedule in the store (set when the run began)
        results.put({"calls": stats.calls, "rate_limited": stats.rate_limited, "succeeded": stats.succeeded,
                     "reservations": bank.reservations if bank else 0,
                     "slots_reserved": bank.slots_reserved if bank else 0})
