"""Run liveness: a run of Forge's whose process died is found by its lease in the store, reported failed to
Dagster with the reason (tagged `forge/dead_run`), and so stops holding up the sensors that wait on it.

Every work sensor asks `live_runs` before it waits on a run, so no sensor waits on a run that no process
runs, with any run launcher; `run_liveness_sensor` sweeps all leased runs besides. Only STARTED runs are
judged here: runs that never started are Dagster's run monitoring's (`start_timeout_seconds`).

One Dagster storage may serve several Forge stores (schemas): a store judges and waits on its own runs
only, those its sensors tagged with its schema (`forge/store`) and untagged ones (launched by hand) once
they took a lease in it.
"""

from __future__ import annotations

import time

import dagster as dg

from forge_dagster.constants import DEAD_RUN_TAG, RUN_LEASE_TAG, STORE_TAG
from forge_dagster.core.config import load_settings
from forge_dagster.core.ops.run_leases import dead_run_message
from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.run_lease_store import DeadRun, RunToCheck
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.sensors.intervals import sensor_interval

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def store_tags(store: ForgeStore) -> dict[str, str]:
    """The tags a work sensor puts on the runs it asks for: they belong to this store."""
    return {STORE_TAG: store.schema}


def _own(store: ForgeStore, runs: list[dg.DagsterRun]) -> tuple[list[dg.DagsterRun], set[str]]:
    """(the runs of this store among `runs`, the ids of those tagged with it)."""
    tagged = {r.run_id for r in runs if r.tags.get(STORE_TAG) == store.schema}
    leased = store.runs.known([r.run_id for r in runs if STORE_TAG not in r.tags])
    return [r for r in runs if r.run_id in tagged or r.run_id in leased], tagged


def reap_dead_runs(instance: dg.DagsterInstance, store: ForgeStore, job_name: str | None = None,
                   partition: str | None = None) -> list[DeadRun]:
    """Report failed every STARTED leased run of this store (of `job_name`, of `partition`) whose lease
    expired or that never took one within the start timeout; return them."""
    settings = load_settings()
    tags = {RUN_LEASE_TAG: "true", **({"dagster/partition": partition} if partition else {})}
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(filters=dg.RunsFilter(
        job_name=job_name, statuses=[dg.DagsterRunStatus.STARTED], tags=tags))}
    runs, tagged = _own(store, [r.dagster_run for r in records.values()])
    now = time.time()

    def started_s_ago(run_id: str) -> float:
        record = records[run_id]
        return now - (record.start_time or record.create_timestamp.timestamp())

    dead = store.runs.declare_dead([
        RunToCheck(r.run_id, r.job_name, r.tags.get("dagster/partition"),
                   unleased_dead=r.run_id in tagged and started_s_ago(r.run_id) > settings.run_start_timeout_s)
        for r in runs])
    for found in dead:
        run = records[found.run_id].dagster_run
        instance.add_run_tags(run.run_id, {DEAD_RUN_TAG: found.reason})
        instance.report_run_failed(run, dead_run_message(found, settings.run_lease_ttl_s))
    return dead


def live_runs(instance: dg.DagsterInstance, store: ForgeStore, job_name: str,
              partition: str | None = None) -> list[dg.DagsterRun]:
    """The in-flight runs of this store of `job_name` (of `partition`), once the dead are reported failed."""
    reaped = {d.run_id for d in reap_dead_runs(instance, store, job_name, partition)}
    tags = {"dagster/partition": partition} if partition else None
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT, tags=tags))
    own, _ = _own(store, runs)
    return [r for r in own if r.run_id not in reaped]


def died(run: dg.DagsterRun | None) -> bool:
    """True for a run that was found dead and reported failed."""
    return run is not None and DEAD_RUN_TAG in run.tags


@dg.sensor(minimum_interval_seconds=sensor_interval(15), default_status=dg.DefaultSensorStatus.RUNNING)
def run_liveness_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Reports failed every run of Forge's whose process died (its lease expired, or it never took one), so
    the work sensors ask for its work again; prunes run leases older than a week."""
    store = lease_store.store
    dead = reap_dead_runs(context.instance, store)
    pruned = store.runs.prune()
    for found in dead:
        context.log.warning(f"run {found.run_id[:8]} found dead ({found.reason}); reported failed")
    note = f"; pruned {pruned} old run leases" if pruned else ""
    if dead:
        return dg.SensorResult(skip_reason=f"reported {len(dead)} dead runs failed: "
                                           + ", ".join(d.run_id[:8] for d in dead) + note)
    return dg.SensorResult(skip_reason="every leased run in flight has a live lease" + note)
