"""A realtime worker process killed mid-flight: every job still ends succeeded, exactly once."""

from __future__ import annotations

import signal

from forge_dagster.core.realtime import RealtimeConfig, RealtimeExecutor
from tests.helpers import forge_env, forge_process, wait_until

from .conftest import enqueue, ring_for


def test_sigkill_of_a_realtime_worker_mid_flight_leaves_every_job_completed_exactly_once(
    sim, store, catalog, database_url, schema,
):
    sim.configure(latency_ms=400)
    ids = enqueue(store, 60)
    env = forge_env(database_url, schema, FORGE_LEASE_TTL_S="2", FORGE_SIMULATOR_URL=sim.url)
    worker = forge_process(["work", "--concurrency", "16"], env=env)
    try:
        wait_until(lambda: store.jobs.counts().get("succeeded", 0) >= 10, timeout_s=60, what="the worker to be busy")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
    orphaned = [i for i in ids if store.jobs.get(i)["state"] == "running"]
    assert orphaned, "the kill should have caught calls in flight"

    rescuer = RealtimeExecutor(store, catalog, ring_for(sim), RealtimeConfig(concurrency=16))
    stats = rescuer.run_sync(until_idle=True)

    assert store.jobs.counts() == {"succeeded": len(ids)}
    for job_id in ids:
        assert [e["to_state"] for e in store.jobs.events(job_id)].count("succeeded") == 1, job_id
    for job_id in orphaned:  # taken over once the dead worker's lease expired: no operator step
        events = store.jobs.events(job_id)
        assert store.jobs.get(job_id)["attempt"] == 2
        assert any(e["reason"] == "reclaimed: lease expired" for e in events), events
    assert stats.lease_lost == 0
    with store.transaction() as conn:
        booked = conn.execute("SELECT count(*), count(DISTINCT (job_id, attempt)) FROM costs").fetchone()
    assert booked[0] == booked[1] >= len(ids) - len(orphaned)
