"""The provider-fault scenarios, each and mixed, for the batch and the realtime path: one catalogue that
the chaos tests (small counts) and `benchmarks/chaos.py` (larger ones) both run."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import openai

from forge_dagster.core.providers.keyring import SIMULATOR_KEY
from forge_dagster.core.store import ForgeStore
from tests.chaos.batch_faults import FaultReport, run_batch_fault
from tests.chaos.realtime_faults import (
    key_paused,
    lift_when,
    other_application_at_the_limit,
    run_realtime_fault,
)

Between = Callable[[int, object, ForgeStore], None]

MIXED = {"error_5xx_rate": 0.1, "malformed_rate": 0.1, "truncation_rate": 0.05, "out_of_order": True,
         "line_4xx_rate": 0.03}


def lift_after(round_: int, **knobs) -> Between:
    """After round `round_`, set `knobs` (the storm passes, the provider is fast again...)."""
    def between(n: int, sim, store: ForgeStore) -> None:
        if n == round_:
            sim.configure(**knobs)

    return between


def refill_after(round_: int) -> Between:
    """After round `round_`, credit is bought: the quota is refilled and no longer runs out."""
    def between(n: int, sim, store: ForgeStore) -> None:
        if n == round_:
            refill(sim)

    return between


def refill(sim) -> None:
    sim.configure(quota_tokens=None)
    sim.refill_quota()


def cancel_at_provider(n: int, sim, store: ForgeStore) -> None:
    """After the first round, someone cancels every batch at the provider (its console, say) while they
    run; requests that finished in time keep their results. The provider is fast afterwards."""
    if n != 1:
        return
    with openai.OpenAI(api_key=SIMULATOR_KEY, base_url=sim.url + "/v1", max_retries=3) as client:
        for batch in client.batches.list(limit=100):
            client.batches.cancel(batch.id)
    with anthropic.Anthropic(api_key=SIMULATOR_KEY, base_url=sim.url, max_retries=3) as client:
        for batch in client.messages.batches.list(limit=100):
            client.messages.batches.cancel(batch.id)
    sim.configure(batch_processing_s=0)


def batch_scenarios() -> dict[str, dict]:
    """name -> keyword arguments of `run_batch_fault` (besides store, sim, name and jobs)."""
    return {
        "429 storm": {"knobs": {"rpm_limit": 1}, "max_requests_per_batch": 4, "max_attempts": 5,
                      "between": lift_after(2, rpm_limit=None)},
        "quota exhaustion": {"knobs": {"quota_tokens": 400}, "max_requests_per_batch": 4,
                             "between": refill_after(3)},
        "10% 5xx": {"knobs": {"error_5xx_rate": 0.1}, "max_attempts": 5},
        "timeouts": {"knobs": {"route_latency_ms": {"POST /v1/batches": 1200}}, "timeout_s": 0.6,
                     "between": lift_after(1, route_latency_ms={})},
        "expiry, partial results": {"knobs": {"expire_batches": True, "expire_complete_fraction": 0.5},
                                    "between": lift_after(1, expire_batches=False)},
        "cancellation mid-way": {"knobs": {"batch_processing_s": 600, "cancel_complete_fraction": 0.4},
                                 "between": cancel_at_provider},
        "malformed + truncated": {"knobs": {"malformed_rate": 0.3, "truncation_rate": 0.2}, "max_attempts": 2},
        "out-of-order results": {"knobs": {"out_of_order": True}},
        "ambiguous creates": {"knobs": {"ambiguous_create": 0.5}, "max_requests_per_batch": 4},
        "mixed": {"knobs": {**MIXED, "ambiguous_create": 0.1, "expire_batches": True}, "max_attempts": 5,
                  "between": lift_after(1, expire_batches=False)},
    }


def realtime_scenarios() -> dict[str, dict]:
    """name -> keyword arguments of `run_realtime_fault` (besides store, sim, name and jobs)."""
    return {
        # Another application used the key at its limit, and Forge was configured ten times too high.
        "429 storm": {"knobs": {"rpm_limit": 1200, "latency_ms": 50}, "ring_env": {"OPENAI_RPM": "12000"},
                      "before": other_application_at_the_limit(1200, free_in_s=1.5)},
        "quota exhaustion": {"knobs": {"quota_tokens": 1500},
                             "lift": lift_when(key_paused, refill)},
        "10% 5xx": {"knobs": {"error_5xx_rate": 0.1}},
        "timeouts": {"knobs": {"latency_ms": 800}, "call_timeout_s": 0.3, "max_attempts": 1},
        "malformed + truncated": {"knobs": {"malformed_rate": 0.3, "truncation_rate": 0.2}},
        "mixed": {"knobs": {"error_5xx_rate": 0.1, "malformed_rate": 0.1, "truncation_rate": 0.05,
                            "rpm_limit": 600}, "max_attempts": 4},
    }


def run_scenario(path: str, name: str, store: ForgeStore, sim, jobs: int) -> FaultReport:
    """Run one catalogued scenario of `path` ("batch" or "realtime") with `jobs` jobs."""
    if path == "batch":
        return run_batch_fault(store, sim, name, jobs=jobs, **batch_scenarios()[name])
    return run_realtime_fault(store, sim, name, jobs=jobs, **realtime_scenarios()[name])
