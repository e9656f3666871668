"""Our crashes do not spend provider attempts: Dagster runs of the batch pipeline SIGKILLed in the middle of
their work (a collection while it downloads results, a build while it uploads its batch) are found dead by
their leases, asked for again under new run keys, and every job ends succeeded on its first attempt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import dagster as dg
import pytest

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import poll_open_batches
from forge_dagster.sensors.batch_sensors import batch_status_sensor, pending_work_sensor
from tests.chaos import conservation
from tests.chaos.harness import ROOT, schema_conn, worker_env
from tests.helpers import wait_until
from tests.pipeline.conftest import ticket
from tests.pipeline.test_engine import enqueue
from tests.pipeline.test_sensors import tick

pytestmark = [pytest.mark.chaos, pytest.mark.dagster_tree]
TTL_S = "2"


@pytest.fixture
def dagster_env(tmp_path, database_url, schema, sim, monkeypatch):
    """The environment of a run's process, and this test's: one Dagster home, short run leases."""
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # local storage in the home
    for name, value in (("DAGSTER_HOME", str(home)), ("FORGE_RUN_LEASE_TTL_S", TTL_S)):
        monkeypatch.setenv(name, value)
    return worker_env(database_url, schema, sim.url, tmp_path / "forge", DAGSTER_HOME=str(home),
                      FORGE_RUN_LEASE_TTL_S=TTL_S)


def ask(sensor, instance, resources) -> list[dg.RunRequest]:
    """One tick of `sensor`, its partitions added as the daemon adds them; the runs it asks for."""
    result = tick(sensor, instance, resources)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result.run_requests


def start_run(env: dict, job: str, run_key: str, partition: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.chaos.dagster_run", job, run_key,
                             *([partition] if partition else [])], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: a kill takes its children too


def leased_run(store, job: str, known: set[str]) -> str | None:
    """The id of a run of `job` that took its lease and is not among `known` (its step is working)."""
    with store.transaction() as conn:
        rows = conn.execute("SELECT run_id FROM run_leases WHERE job_name = %s AND dead_at IS NULL",
                            (job,)).fetchall()
    return next((r[0] for r in rows if r[0] not in known), None)


def kill_when_working(store, proc: subprocess.Popen, job: str, known: set[str]) -> str:
    """SIGKILL the run's process once its step holds the run's lease (the work is under way)."""
    run_id = wait_until(lambda: leased_run(store, job, known) or (proc.poll() is not None and "exited"),
                        timeout_s=60, what=f"a {job} run to take its lease")
    assert run_id != "exited", proc.stderr.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the run's process and whatever it started (log capture)
    proc.wait(30)
    known.add(run_id)
    return run_id


def attempts(database_url: str, schema: str) -> dict[int, int]:
    with schema_conn(database_url, schema) as conn:
        return dict(conn.execute("SELECT id, attempt FROM jobs").fetchall())


def test_collection_runs_killed_again_and_again_spend_no_attempt(dagster_env, resources, store, catalog, ports,
                                                                sim, database_url, schema):
    enqueue(store, [ticket(i) for i in range(6)])
    [batch_id] = build_and_submit(store, catalog, ports).batches
    wait_until(lambda: batch_id in poll_open_batches(store, ports).ended, what="the batch to end")
    sim.configure(route_latency_ms={"GET /v1/files/*/content": 30_000})  # each run stalls in its download
    instance = dg.DagsterInstance.get()
    known: set[str] = set()
    keys = []
    for _ in range(3):
        [request] = wait_until(lambda: ask(batch_status_sensor, instance, resources),
                               timeout_s=30, what="the collection to be asked for (again)")
        keys.append(request.run_key)
        kill_when_working(store, start_run(dagster_env, "collect_batch", request.run_key, request.partition_key),
                          "collect_batch", known)
        assert set(attempts(database_url, schema).values()) == {1}
    sim.configure(route_latency_ms={})
    [request] = wait_until(lambda: ask(batch_status_sensor, instance, resources), timeout_s=30,
                           what="the collection to be asked for again")
    keys.append(request.run_key)
    final = start_run(dagster_env, "collect_batch", request.run_key, request.partition_key)
    assert final.wait(120) == 0, final.stderr.read()[-3000:]

    partition = f"b{batch_id}"
    assert keys == [f"collect:{partition}", f"collect:{partition}:r1", f"collect:{partition}:r2",
                    f"collect:{partition}:r3"]
    for run_id in known:  # each killed run was reported failed with its reason
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE and run.tags["forge/dead_run"] == "lease expired"
    assert attempts(database_url, schema) and set(attempts(database_url, schema).values()) == {1}
    assert store.jobs.counts() == {"succeeded": 6}
    with schema_conn(database_url, schema) as conn:
        assert conservation.check(conn).problems == []


def test_build_run_killed_while_uploading_is_resumed_at_once_on_the_same_attempt(dagster_env, resources, store,
                                                                                 sim, database_url, schema):
    enqueue(store, [ticket(i) for i in range(5)])
    sim.configure(route_latency_ms={"POST /v1/files": 30_000})  # the intent is stored; the upload stalls
    instance = dg.DagsterInstance.get()
    [request] = ask(pending_work_sensor, instance, resources)
    known: set[str] = set()
    proc = start_run(dagster_env, "build_batches", request.run_key)
    wait_until(lambda: store.jobs.counts().get("submitted") == 5 and leased_run(store, "build_batches", known),
               timeout_s=60, what="the submission intent of the build run")
    kill_when_working(store, proc, "build_batches", known)
    sim.configure(route_latency_ms={})

    # Found dead about one TTL later: its submission is resumable at once (not after 15 minutes).
    [again] = wait_until(lambda: ask(pending_work_sensor, instance, resources), timeout_s=30,
                         what="the build to be asked for again")
    assert again.run_key != request.run_key
    final = start_run(dagster_env, "build_batches", again.run_key)
    assert final.wait(120) == 0, final.stderr.read()[-3000:]
    assert store.jobs.counts() == {"submitted": 5} and store.batches.counts() == {"in_progress": 1}
    creates = [r for r in sim.requests() if r["method"] == "POST" and r["path"] == "/v1/batches"]
    assert len(creates) == 1  # created once, by the resumed submission
    assert set(attempts(database_url, schema).values()) == {1}
    [killed] = known
    assert instance.get_run_by_id(killed).tags["forge/dead_run"] == "lease expired"
