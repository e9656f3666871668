"""A Dagster run of Forge's whose process died is found by its lease, reported failed with its reason, and
its work asked for again under a new run key; a live run is never reported; our crashes give back the
attempts of the jobs the dead run had claimed."""

from __future__ import annotations

import time

import dagster as dg
import pytest

from forge_dagster.core.ops.run_leases import RunDeclaredDead, RunHeartbeat
from forge_dagster.core.store import ForgeStore
from forge_dagster.definitions import build_definitions
from forge_dagster.sensors.batch_sensors import batch_status_sensor, collect_run_key, pending_work_sensor
from forge_dagster.sensors.run_liveness import run_liveness_sensor, store_tags
from tests.helpers import wait_until
from tests.pipeline.conftest import ticket
from tests.pipeline.test_engine import enqueue
from tests.pipeline.test_sensors import requested_key, tick

DEFS = build_definitions()


def started_run(instance: dg.DagsterInstance, job_name: str, store: ForgeStore | None = None,
                **tags: str) -> dg.DagsterRun:
    """A run recorded as STARTED, as a run worker leaves it when it is killed; asked for by the sensors of
    `store` when given (tagged with it)."""
    job = DEFS.resolve_job_def(job_name)
    run = instance.create_run_for_job(job, tags={**job.tags, **(store_tags(store) if store else {}), **tags})
    instance.report_dagster_event(dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value,
                                                  job_name=job_name), run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


def lease_expired(store: ForgeStore, run_id: str) -> bool:
    with store.transaction() as conn:
        row = conn.execute("SELECT lease_expires_at < now() FROM run_leases WHERE run_id = %s", (run_id,)).fetchone()
    return bool(row and row[0])


@pytest.fixture
def ghost(database_url, schema):
    """The store of a step process that took its run's lease and claimed jobs, then died."""
    with ForgeStore(database_url, schema, owner="ghost-host:4242:dead01") as s:
        yield s


def test_dead_build_run_is_reported_failed_and_its_work_asked_for_again_at_once(resources, store, ghost):
    instance = dg.DagsterInstance.ephemeral()
    enqueue(store, [ticket(i) for i in range(3)])
    first = tick(pending_work_sensor, instance, resources)
    run = started_run(instance, "build_batches", store, **{"dagster/run_key": requested_key(first)})
    assert ghost.runs.take(run.run_id, run.job_name, None, ttl_s=0.5)
    waiting = tick(pending_work_sensor, instance, resources, cursor=first.cursor)
    assert waiting.run_requests == [] and "still in flight" in waiting.skip_reason.skip_message
    wait_until(lambda: lease_expired(store, run.run_id), what="the dead run's lease to expire")

    again = tick(pending_work_sensor, instance, resources, cursor=first.cursor)
    assert requested_key(again) == requested_key(first) + ":r1"  # no REPEAT_UNCHANGED_S wait after a death
    dead = instance.get_run_by_id(run.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE and dead.tags["forge/dead_run"] == "lease expired"
    [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "run found dead: its lease (TTL 30 s) expired" in failure.message
    assert "ghost-host:4242:dead01" in failure.message
    with pytest.raises(RunDeclaredDead):  # a step process that outlived its run does no more work for it
        RunHeartbeat(ghost, run.run_id, run.job_name, None, ttl_s=30).start()


def test_jobs_a_dead_run_claimed_go_back_with_their_attempt_unspent(resources, store, ghost):
    instance = dg.DagsterInstance.ephemeral()
    enqueue(store, [ticket(i) for i in range(3)])
    run = started_run(instance, "build_batches")
    assert ghost.runs.take(run.run_id, run.job_name, None, ttl_s=0.5)
    claimed = ghost.jobs.claim(2, mode="batch", to_state="claimed", ttl_s=300)  # attempt 1, never sent
    wait_until(lambda: lease_expired(store, run.run_id), what="the dead run's lease to expire")
    tick(run_liveness_sensor, instance, resources)
    [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "2 claimed jobs back to pending, attempt unspent" in failure.message
    for job in claimed:  # at once, not after the claims' own 300 s leases
        row = store.jobs.get(job.id)
        assert (row["state"], row["attempt"], row["lease_token"]) == ("pending", 0, None)
        assert "died before submitting (attempt given back)" in store.jobs.events(job.id)[-1]["reason"]


def test_run_with_a_live_heartbeat_is_waited_on_and_never_reported(resources, store):
    instance = dg.DagsterInstance.ephemeral()
    enqueue(store, [ticket(1)])
    first = tick(pending_work_sensor, instance, resources)
    run = started_run(instance, "build_batches", store, **{"dagster/run_key": requested_key(first)})
    beat = RunHeartbeat(store, run.run_id, run.job_name, None, ttl_s=1.0).start()
    try:
        start = time.monotonic()
        # Three TTLs go by: the heartbeat thread keeps the lease, so the run is waited on every time.
        while time.monotonic() - start < 3.0:
            waiting = tick(pending_work_sensor, instance, resources, cursor=first.cursor)
            assert waiting.run_requests == [] and "still in flight" in waiting.skip_reason.skip_message
    finally:
        beat.stop()  # the step ended: the lease is left one TTL for the run's next step
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    wait_until(lambda: lease_expired(store, run.run_id), what="the lease to outlive the step by one TTL")
    assert "reported 1 dead runs failed" in tick(run_liveness_sensor, instance, resources).skip_reason.skip_message


def test_started_run_that_never_took_its_lease_is_dead_after_the_start_timeout(resources, store, monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    run = started_run(instance, "build_batches", store)
    assert "every leased run in flight has a live lease" in \
        tick(run_liveness_sensor, instance, resources).skip_reason.skip_message  # within its start timeout
    monkeypatch.setenv("FORGE_RUN_START_TIMEOUT_S", "0.01")
    tick(run_liveness_sensor, instance, resources)
    dead = instance.get_run_by_id(run.run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    assert dead.tags["forge/dead_run"] == "no lease taken within the start timeout"


def test_run_of_another_store_sharing_the_dagster_storage_is_neither_judged_nor_waited_on(
        resources, store, monkeypatch):
    monkeypatch.setenv("FORGE_RUN_START_TIMEOUT_S", "0.01")
    instance = dg.DagsterInstance.ephemeral()
    enqueue(store, [ticket(1)])
    theirs = started_run(instance, "build_batches", **{"forge/store": "another_schema"})
    assert requested_key(tick(pending_work_sensor, instance, resources))  # not held up by their run
    tick(run_liveness_sensor, instance, resources)
    assert instance.get_run_by_id(theirs.run_id).status == dg.DagsterRunStatus.STARTED  # theirs to judge


def test_run_of_a_job_without_a_lease_is_never_judged(resources, store, monkeypatch):
    monkeypatch.setenv("FORGE_RUN_START_TIMEOUT_S", "0.01")
    instance = dg.DagsterInstance.ephemeral()
    run = started_run(instance, "nightly_chain", store)  # its steps take no run lease: nothing to judge it by
    tick(run_liveness_sensor, instance, resources)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_dead_collection_run_is_asked_for_again_under_a_new_key(resources, store, catalog, ports, sim):
    from forge_dagster.core.batch.building import build_and_submit
    from forge_dagster.core.batch.collection import poll_open_batches

    instance = dg.DagsterInstance.ephemeral()
    enqueue(store, [ticket(i) for i in range(3)])
    [batch_id] = build_and_submit(store, catalog, ports).batches
    wait_until(lambda: batch_id in poll_open_batches(store, ports).ended, what="the batch to end")
    [request] = tick(batch_status_sensor, instance, resources).run_requests
    partition = f"b{batch_id}"
    assert (request.run_key, request.partition_key) == (f"collect:{partition}", partition)

    run = started_run(instance, "collect_batch", store, **{"dagster/partition": partition,
                                                     "dagster/run_key": request.run_key})
    assert store.runs.take(run.run_id, run.job_name, partition, ttl_s=0.5)
    waiting = tick(batch_status_sensor, instance, resources)
    assert waiting.run_requests == [] and "collection run in flight" in waiting.skip_reason.skip_message
    wait_until(lambda: lease_expired(store, run.run_id), what="the dead run's lease to expire")
    [again] = tick(batch_status_sensor, instance, resources).run_requests  # at once after a death
    assert again.run_key == f"collect:{partition}:r1"
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE

    # A run that failed by itself (not dead) is asked for again after a doubling delay, never given up.
    failed = started_run(instance, "collect_batch", store, **{"dagster/partition": partition,
                                                       "dagster/run_key": again.run_key})
    instance.report_run_failed(failed, "provider 503 while downloading results")
    assert collect_run_key(instance, store, partition, time.time()) is None
    assert collect_run_key(instance, store, partition, time.time() + 3600) == f"collect:{partition}:r2"


def test_run_between_two_steps_is_not_declared_dead_while_its_next_step_starts(resources, store):
    """A step ended and the next one's process is still starting (seconds on a loaded machine): the lease
    outlives the step by the handover window, so the run is not declared dead (and its next step refused)
    in between; a run whose next step never comes is found once the window has passed."""
    instance = dg.DagsterInstance.ephemeral()
    run = started_run(instance, "collect_batch", store)
    RunHeartbeat(store, run.run_id, run.job_name, None, ttl_s=1.0, handover_s=10.0).start().stop()
    time.sleep(2.5)  # the scenario: a slow start of the next step, two and a half TTLs, well inside the window
    message = tick(run_liveness_sensor, instance, resources).skip_reason.skip_message
    assert message.startswith("every leased run in flight has a live lease"), message
    RunHeartbeat(store, run.run_id, run.job_name, None, ttl_s=1.0).start().stop()  # the next step ran
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    wait_until(lambda: lease_expired(store, run.run_id), what="the last step's lease to expire")
    assert "reported 1 dead runs failed" in tick(run_liveness_sensor, instance, resources).skip_reason.skip_message
