"""A realtime worker whose lease was taken over stops working on the job (its heartbeat finds the lease
gone and cancels the call) and its late result is rejected: the job ends once, as the new holder says."""

from __future__ import annotations

from forge_dagster.core.models import JobState
from forge_dagster.core.realtime import RealtimeConfig
from tests.helpers import accept, wait_until

from .conftest import enqueue, ring_for, start_executor


def test_stale_realtime_worker_cannot_complete_after_takeover(sim, store, catalog, running):
    sim.configure(latency_ms=4000)  # the call is still in flight when the lease is taken over
    [job_id] = enqueue(store, 1)
    worker = start_executor(running, store, catalog, ring_for(sim), RealtimeConfig(concurrency=2, lease_ttl_s=1.5))
    wait_until(lambda: worker.executor.stats.calls == 1, timeout_s=20, what="the call to be sent")

    def take_over():  # the lease runs out (as if the worker stalled) and another worker claims the job
        with store.transaction() as conn:
            conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (job_id,))
        return store.jobs.claim(1, mode="realtime", owner="rescuer", ttl_s=60)

    [taken] = wait_until(take_over, timeout_s=10, what="the takeover")
    assert taken.id == job_id and taken.attempt == 2
    # The stale worker's heartbeat (every ttl/3) finds the lease gone and cancels its call; its release is
    # fenced out, so the job stays with the rescuer.
    wait_until(lambda: worker.executor.stats.lease_lost == 1, timeout_s=10, what="the stale worker to give up")
    assert store.jobs.get(job_id)["lease_owner"] == "rescuer"

    store.jobs.complete(taken, accept(store, taken, {"category": "bug", "priority": "high",
                                                "summary": "Export does nothing."}))
    stats = worker.finish()
    job = store.jobs.get(job_id)
    assert (job["state"], job["attempt"]) == (JobState.SUCCEEDED, 2)
    assert job["output"]["summary"] == "Export does nothing."
    assert [e["to_state"] for e in store.jobs.events(job_id)] == ["pending", "running", "running", "succeeded"], \
        "enqueued, claimed, taken over, completed once: nothing from the stale worker"
    assert stats.calls == 1 and stats.succeeded == 0 and stats.released == 0 and stats.lease_lost == 1
    with store.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM costs").fetchone()[0] == 0, "the cancelled call billed nothing"
