"""Run liveness: a run of Forge's whose process died is found by its lease in the store, reported failed to
Dagster with the reason (tagged `forge/dead_run`), and so stops holding up the sensors that wait on it.

Every work sensor asks `live_runs` before it waits on a run, so no sensor waits on a run that no process
runs, with any run launcher; `run_liveness_sensor` sweeps all leased runs besides. Only STARTED runs are
judged here: runs that never started are Dagster's run monitoring's (`start_timeout_seconds`).
"""

from __future__ import annotations

import time

import dagster as dg

from forge_dagster.constants import DEAD_RUN_TAG, RUN_LEASE_TAG
from forge_dagster.core.config import load_settings
from forge_dagster.core.ops.run_leases import dead_run_message
from forge_dagster.core.store import LeaseStore
from forge_dagster.core.store.run_lease_store import DeadRun, RunToCheck
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.sensors.intervals import sensor_interval

IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def reap_dead_runs(instance: dg.DagsterInstance, store: LeaseStore, job_name: str | None = None,
                   partition: str | None = None) -> list[DeadRun]:
    """Report failed every STARTED leased run (of `job_name`, of `partition`) whose lease expired or that
    never took one within the start timeout; return them."""
    settings = load_settings()
    tags = {RUN_LEASE_TAG: "true", **({"dagster/partition": partition} if partition else {})}
    records = instance.get_run_records(filters=dg.RunsFilter(
        job_name=job_name, statuses=[dg.DagsterRunStatus.STARTED], tags=tags))
    now = time.time()
    by_id = {r.dagster_run.run_id: r.dagster_run for r in records}
    dead = store.runs.declare_dead([
        RunToCheck(r.dagster_run.run_id, r.dagster_run.job_name, r.dagster_run.tags.get("dagster/partition"),
                   unleased_dead=now - (r.start_time or r.create_timestamp.timestamp()) > settings.run_start_timeout_s)
        for r in records])
    for found in dead:
        run = by_id[found.run_id]
        message = dead_run_message(found, settings.run_lease_ttl_s)
        instance.add_run_tags(run.run_id, {DEAD_RUN_TAG: found.reason})
        instance.report_run_failed(run, message)
    return dead


def live_runs(instance: dg.DagsterInstance, store: LeaseStore, job_name: str,
              partition: str | None = None) -> list[dg.DagsterRun]:
    """The in-flight runs of `job_name` (of `partition`) once the dead among them are reported failed."""
    reaped = {d.run_id for d in reap_dead_runs(instance, store, job_name, partition)}
    tags = {"dagster/partition": partition} if partition else None
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT, tags=tags))
    return [r for r in runs if r.run_id not in reaped]


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
