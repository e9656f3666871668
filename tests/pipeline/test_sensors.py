"""Work sensors through Dagster: a run key per coming-due of work, never two runs for the same work at once,
skip reasons that explain themselves, and cursors that carry what the next tick needs."""

from __future__ import annotations

import json
import time

import dagster as dg
import psycopg
from psycopg.types.json import Jsonb

from forge_dagster.assets.batch_pipeline import job_intake
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import ForgeStore, JobSpec
from forge_dagster.definitions import build_definitions
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.sensors.batch_sensors import REPEAT_UNCHANGED_S, pending_work_sensor
from forge_dagster.sensors.lease_recovery import lease_recovery_sensor
from forge_dagster.sensors.realtime_sensors import realtime_work_sensor
from tests.helpers import make_due, run_batch_round
from tests.pipeline.conftest import ticket, write_inbox
from tests.pipeline.test_engine import enqueue


def tick(sensor, instance, resources, cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def requested_key(result: dg.SensorResult) -> str:
    [request] = result.run_requests
    return request.run_key


def test_pending_work_sensor_asks_once_per_new_work_and_explains_skips(resources, store, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_HOME", str(tmp_path))  # an empty inbox
    instance = dg.DagsterInstance.ephemeral()
    idle = tick(pending_work_sensor, instance, resources)
    assert idle.run_requests == [] and "no due batch jobs, no inbox files" in idle.skip_reason.skip_message

    enqueue(store, [ticket(1)])
    first = tick(pending_work_sensor, instance, resources)
    again = tick(pending_work_sensor, instance, resources)  # a tick that did not keep the cursor
    assert requested_key(first) == requested_key(again)  # same work, same key: Dagster runs it once
    enqueue(store, [ticket(2)])
    third = tick(pending_work_sensor, instance, resources, cursor=first.cursor)
    assert requested_key(third) != requested_key(first)
    assert json.loads(third.cursor)["run_key"] == requested_key(third)


def test_requeued_cohort_gets_a_new_run_key(resources, store, catalog, ports, sim):
    """Every job of a batch comes back (the batch expired with nothing finished): same jobs, same count,
    same highest id as when they were first due, and yet a new build run must be asked for."""
    instance = dg.DagsterInstance.ephemeral()
    enqueue(store, [ticket(i) for i in range(4)])
    first = tick(pending_work_sensor, instance, resources)
    sim.configure(expire_batches=True, expire_complete_fraction=0.0)
    run_batch_round(store, catalog, ports)
    make_due(store)
    assert store.jobs.counts() == {"pending": 4}
    again = tick(pending_work_sensor, instance, resources, cursor=first.cursor)
    assert requested_key(again) != requested_key(first)


def test_unchanged_work_is_not_asked_for_while_its_run_is_in_flight(resources, store):
    instance = dg.DagsterInstance.ephemeral()
    enqueue(store, [ticket(1)])
    first = tick(pending_work_sensor, instance, resources)
    [request] = first.run_requests
    run = instance.create_run_for_job(build_definitions().resolve_job_def("build_batches"),
                                      tags={**request.tags, "dagster/run_key": request.run_key})
    waiting = tick(pending_work_sensor, instance, resources, cursor=first.cursor)
    assert waiting.run_requests == [] and waiting.cursor == first.cursor
    assert f"wait for build run {run.run_id[:8]}, still in flight" in waiting.skip_reason.skip_message

    instance.report_run_failed(run)  # the run ended without taking the work
    soon = tick(pending_work_sensor, instance, resources, cursor=first.cursor)
    assert soon.run_requests == [] and "unchanged since run key" in soon.skip_reason.skip_message
    earlier = json.dumps({**json.loads(first.cursor), "requested_at": time.time() - REPEAT_UNCHANGED_S - 1})
    later = tick(pending_work_sensor, instance, resources, cursor=earlier)
    assert requested_key(later) == requested_key(first) + ":r1"


def test_build_run_drains_the_inbox_the_sensor_watched(resources, store, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    write_inbox(tmp_path / "home" / "inbox", [ticket(i) for i in range(3)])
    instance = dg.DagsterInstance.ephemeral()
    [request] = tick(pending_work_sensor, instance, resources).run_requests
    intake = dg.materialize([job_intake], instance=instance, resources=resources, run_config=request.run_config)
    assert intake.asset_materializations_for_node("job_intake")[0].metadata["accepted"].value == 3
    assert store.jobs.counts() == {"pending": 3}
    assert not list((tmp_path / "home" / "inbox").glob("*.jsonl"))


def test_realtime_jobs_released_back_get_a_new_run_key(store: ForgeStore, database_url, schema):
    resources = {"lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema)}
    instance = dg.DagsterInstance.ephemeral()
    submit_jobs(store, [JobSpec("ticket_triage", ticket(i)["input"], processor_version="1.0.0", mode="realtime")
                   for i in range(2)])
    first = tick(realtime_work_sensor, instance, resources)
    jobs = store.jobs.claim(2, mode="realtime")
    store.jobs.fail_many([(job, "transient: overloaded", True) for job in jobs])  # back to pending, retryable
    make_due(store)
    again = tick(realtime_work_sensor, instance, resources, cursor=first.cursor)
    assert requested_key(again) != requested_key(first)


def test_lease_recovery_sensor_counts_what_it_recovered_in_its_cursor(store: ForgeStore, database_url, schema):
    resources = {"lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema)}
    instance = dg.DagsterInstance.ephemeral()
    submit_jobs(store, [JobSpec("ticket_triage", ticket(1)["input"], processor_version="1.0.0", mode="realtime")])
    store.jobs.claim(1, mode="realtime")  # a worker took the job and died; its lease has run out since
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second'")
    result = tick(lease_recovery_sensor, instance, resources, cursor=json.dumps({"ticks": 2, "requeued": 5}))
    assert result.skip_reason.skip_message == "recovered 1 expired leases, 0 jobs dead"
    assert json.loads(result.cursor) == {"ticks": 3, "requeued": 6, "dead": 0}
    assert store.jobs.counts() == {"pending": 1}


def test_row_another_application_inserted_asks_for_intake_before_any_realtime_run(resources, store, database_url,
                                                                                schema):
    """A realtime row nobody reviewed yet cannot be claimed: the build run (whose intake reviews it) must
    be asked for, not a realtime run that would find nothing to claim."""
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        conn.execute("INSERT INTO jobs (source, external_id, processor, mode, payload) "
                     "VALUES ('crm', 'c1', 'ticket_triage', 'realtime', %s)", (Jsonb(ticket(1)["input"]),))
    instance = dg.DagsterInstance.ephemeral()
    assert tick(realtime_work_sensor, instance, resources).run_requests == []
    [request] = tick(pending_work_sensor, instance, resources).run_requests
    dg.materialize([job_intake], instance=instance, resources=resources, run_config=request.run_config)
    assert tick(pending_work_sensor, instance, resources).run_requests == []
    assert requested_key(tick(realtime_work_sensor, instance, resources)).startswith("realtime:")
