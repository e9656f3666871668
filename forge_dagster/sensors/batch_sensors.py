"""Sensors of the batch pipeline: one sees pending work, one polls every in-flight batch each tick.

Run keys of work sensors: Dagster launches a run key once, ever. So the key names the due work itself
(how many jobs, the highest id, their latest change): work that comes due again (a requeued cohort, jobs
a budget held) was changed when it went back to pending, so it gets a new key. While a run of the job is
in flight nothing new is requested; if the very same work is still due after that run ended (it failed,
or could not take the work), it is asked for again under a numbered key, `REPEAT_UNCHANGED_S` after the
last request, so a failing run does not loop every tick.
"""

import json
import time

import dagster as dg

from forge_dagster.assets.batch_pipeline import batch_partition_key, batch_partitions, default_inbox
from forge_dagster.core.batch.building import STALE_SUBMITTING_S
from forge_dagster.core.batch.collection import poll_open_batches
from forge_dagster.core.intake.inbox import inbox_waiting
from forge_dagster.jobs.batch_jobs import build_batches_job, collect_batch_job
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.providers import ProviderPortsResource

REPEAT_UNCHANGED_S = 120
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def run_in_flight(instance: dg.DagsterInstance, job_name: str) -> dg.DagsterRun | None:
    """A run of `job_name` that is queued or running, if any."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1)
    return runs[0] if runs else None


def work_run_key(prefix: str, signature: str, cursor: dict, now: float) -> tuple[str | None, dict]:
    """(run key, new cursor) for the due work named by `signature`, given the sensor's last cursor and
    that no run of the job is in flight; the key is None while unchanged work waits to be asked again."""
    if signature != cursor.get("signature"):
        repeat = 0
    elif now - cursor.get("requested_at", 0) < REPEAT_UNCHANGED_S:
        return None, cursor
    else:
        repeat = cursor.get("repeat", 0) + 1
    key = f"{prefix}:{signature}" + (f":r{repeat}" if repeat else "")
    return key, {"signature": signature, "run_key": key, "requested_at": int(now), "repeat": repeat}


@dg.sensor(job=build_batches_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def pending_work_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Requests a batch-building run when jobs are due, files wait in the inbox, or a submission was left
    unfinished; one build run at a time."""
    store = lease_store.store
    due = store.batches.due_work("batch")
    stale = store.batches.stale_submitting(STALE_SUBMITTING_S)
    inbox = default_inbox()
    files, newest_file_ms = inbox_waiting(inbox)
    cursor = json.loads(context.cursor or "{}")
    waiting = f"{due.jobs} due jobs, {files} inbox files, {len(stale)} unfinished submissions"
    if not (due.jobs or stale or files):
        return dg.SensorResult(skip_reason=f"no due batch jobs, no inbox files in {inbox}, no unfinished "
                                           "submissions", cursor=context.cursor)
    running = run_in_flight(context.instance, build_batches_job.name)
    if running is not None:
        return dg.SensorResult(skip_reason=f"{waiting} wait for build run {running.run_id[:8]}, still in flight",
                               cursor=context.cursor)
    signature = f"{due.signature}:{files}:{newest_file_ms}:{max(stale, default=0)}"
    run_key, cursor = work_run_key("build", signature, cursor, time.time())
    if run_key is None:
        return dg.SensorResult(skip_reason=f"{waiting} unchanged since run key {cursor['run_key']}; asking "
                                           f"again {REPEAT_UNCHANGED_S}s after it", cursor=context.cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=run_key, tags={"forge/due_jobs": str(due.jobs)},
            run_config={"ops": {"job_intake": {"config": {"inbox": str(inbox)}}}})],
        cursor=json.dumps(cursor),
    )


@dg.sensor(job=collect_batch_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def batch_status_sensor(
    context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource, providers: ProviderPortsResource,
):
    """Polls every in-flight provider batch once per tick and requests the collection run of each
    batch that ended (one run per batch: the run key is the batch's), tagged with its provider."""
    store = lease_store.store
    poll = poll_open_batches(store, providers.ports)
    for error in poll.errors:
        context.log.warning(error)
    ended = store.batches.ended_uncollected()
    cursor = json.loads(context.cursor or "{}")
    cursor = {"ticks": cursor.get("ticks", 0) + 1, "polled": poll.polled, "ended_waiting": len(ended)}
    if not ended:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"polled {poll.polled} in-flight batches; none ended"), cursor=json.dumps(cursor))
    keys = {batch_partition_key(batch_id): provider for batch_id, provider in ended}
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new = [k for k in keys if k not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"collect:{k}", partition_key=k, tags={"forge/provider": provider})
                      for k, provider in keys.items()],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(cursor),
    )
