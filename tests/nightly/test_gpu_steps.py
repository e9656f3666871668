"""The nightly GPU steps save what they made under the lease's fence, inside the hold: an answer the model
gave after the lock went to someone else is not recorded as the night's."""

from __future__ import annotations

import threading

from forge_dagster.core.nightly import gpu_steps
from forge_dagster.core.nightly.gpu_mutex import GpuMutex, connect
from forge_dagster.core.nightly.health import FAIL, CheckResult
from forge_dagster.core.nightly.ollama import OllamaRuntime
from tests.helpers import wait_until
from tests.nightly.conftest import MODEL, model_calls


def test_a_model_answer_made_after_the_lock_was_lost_is_not_recorded(sim, store, redis_url, mutex_name):
    sim.configure(route_latency_ms={"POST /api/chat": 1500})  # the model thinks for a while
    repo = store.knowledge
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=5000, fence_floor=repo.current_fence)
    client = connect(redis_url)

    def steal() -> None:
        # The fencing counter appears once the step holds the lock with its fence (then it calls the model).
        wait_until(lambda: client.get(mutex.fence_key) is not None, timeout_s=30, what="the step to hold the lock")
        client.set(mutex.key, "another holder", px=30_000)

    thief = threading.Thread(target=steal)
    thief.start()
    checks = [CheckResult("disk", FAIL, "0.5 GB free")]
    result = gpu_steps.assess(mutex, 10, OllamaRuntime(sim.ollama_host, MODEL), repo, "2030-02-01", checks)
    thief.join(timeout=30)
    client.close()

    assert len(model_calls(sim)) == 1 and result.model_called  # the model did answer ...
    assert "LockLost" in result.assessment["error"]  # ... but its answer was dropped
    assert result.level == "RED"  # the rules' verdict stands without it
    saved = repo.night_steps("2030-02-01")["triage"]["output"]
    assert saved["assessment"] == result.assessment and "fence" not in saved
    assert repo.current_fence(mutex.key) is None  # nothing was written under the lost lease
