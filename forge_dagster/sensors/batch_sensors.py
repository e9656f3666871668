"""Sensors of the batch pipeline: one sees pending work, one polls every in-flight batch each tick.

Run keys of work sensors: Dagster launches a run key once, ever. So the key names the due work itself
(how many jobs, the highest id, their latest change): work that comes due again (a requeued cohort, jobs
a budget held) was changed when it went back to pending, so it gets a new key. While a run of the job is
in flight nothing new is requested; if the very same work is still due after that run ended (it failed,
or could not take the work), it is asked for again under a numbered key, `REPEAT_UNCHANGED_S` after the
last request, so a failing run does not loop every tick; at once when that run was found dead (its process
died: run_liveness.py). A run found dead is never waited on.

Collection runs are keyed by batch: `collect:b<id>`, then `collect:b<id>:r<n>` for the n-th run of the
same batch while it stays uncollected (the previous run died, failed, or ended without collecting it): at
once after a dead run, after a doubling delay after a failed one.
"""

import json
import time

import dagster as dg

from forge_dagster.assets.batch_pipeline import batch_partition_key, batch_partitions, default_inbox
from forge_dagster.core.batch.building import STALE_SUBMITTING_S
from forge_dagster.core.batch.collection import poll_open_batches
from forge_dagster.core.intake.inbox import inbox_waiting
from forge_dagster.core.store import ForgeStore
from forge_dagster.jobs.batch_jobs import build_batches_job, collect_batch_job
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.provider_keys import ProviderKeysResource
from forge_dagster.sensors.intervals import retry_delay, sensor_interval
from forge_dagster.sensors.run_liveness import died, live_runs, store_tags

REPEAT_UNCHANGED_S = 120
COLLECT_RETRY_BASE_S, COLLECT_RETRY_CAP_S = 60, 900


def run_in_flight(instance: dg.DagsterInstance, store: ForgeStore, job_name: str) -> dg.DagsterRun | None:
    """A live run of `job_name` that is queued or running, if any (dead ones are reported failed first)."""
    runs = live_runs(instance, store, job_name)
    return runs[0] if runs else None


def last_requested_died(instance: dg.DagsterInstance, cursor: dict) -> bool:
    """True when the run of the cursor's last run key was found dead."""
    if not cursor.get("run_key"):
        return False
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": cursor["run_key"]}), limit=1)
    return died(runs[0] if runs else None)


def work_run_key(prefix: str, signature: str, cursor: dict, now: float, *,
                 ask_now: bool = False) -> tuple[str | None, dict]:
    """(run key, new cursor) for the due work named by `signature`, given the sensor's last cursor and
    that no run of the job is in flight; the key is None while unchanged work waits to be asked again
    (unless `ask_now`: the run asked for last was found dead)."""
    if signature != cursor.get("signature"):
        repeat = 0
    elif not ask_now and now - cursor.get("requested_at", 0) < retry_delay(REPEAT_UNCHANGED_S):
        return None, cursor
    else:
        repeat = cursor.get("repeat", 0) + 1
    key = f"{prefix}:{signature}" + (f":r{repeat}" if repeat else "")
    return key, {"signature": signature, "run_key": key, "requested_at": int(now), "repeat": repeat}


@dg.sensor(job=build_batches_job, minimum_interval_seconds=sensor_interval(30), default_status=dg.DefaultSensorStatus.RUNNING)
def pending_work_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Requests a batch-building run when jobs are due, files wait in the inbox, or a submission was left
    unfinished; one build run at a time."""
    store = lease_store.store
    # First, so a dead build run's claims and unfinished submissions are given back before they are counted.
    running = run_in_flight(context.instance, store, build_batches_job.name)
    due = store.batches.due_work("batch")
    stale = store.batches.stale_submitting(STALE_SUBMITTING_S)
    inbox = default_inbox()
    files, newest_file_ms = inbox_waiting(inbox)
    cursor = json.loads(context.cursor or "{}")
    waiting = f"{due.jobs} due jobs, {files} inbox files, {len(stale)} unfinished submissions"
    if not (due.jobs or stale or files):
        return dg.SensorResult(skip_reason=f"no due batch jobs, no inbox files in {inbox}, no unfinished "
                                           "submissions", cursor=context.cursor)
    if running is not None:
        return dg.SensorResult(skip_reason=f"{waiting} wait for build run {running.run_id[:8]}, still in flight",
                               cursor=context.cursor)
    signature = f"{due.signature}:{files}:{newest_file_ms}:{max(stale, default=0)}"
    run_key, cursor = work_run_key("build", signature, cursor, time.time(),
                                   ask_now=last_requested_died(context.instance, cursor))
    if run_key is None:
        return dg.SensorResult(skip_reason=f"{waiting} unchanged since run key {cursor['run_key']}; asking "
                                           f"again {retry_delay(REPEAT_UNCHANGED_S):g}s after it", cursor=context.cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=run_key, tags={"forge/due_jobs": str(due.jobs), **store_tags(store)},
            run_config={"ops": {"job_intake": {"config": {"inbox": str(inbox)}}}})],
        cursor=json.dumps(cursor),
    )


@dg.sensor(job=collect_batch_job, minimum_interval_seconds=sensor_interval(60), default_status=dg.DefaultSensorStatus.RUNNING)
def batch_status_sensor(
    context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource, provider_keys: ProviderKeysResource,
):
    """Polls every in-flight provider batch once per tick and requests the collection run of each
    batch that ended and has no live collection run (see the module docstring for its run keys), tagged
    with its provider."""
    store = lease_store.store
    poll = poll_open_batches(store, provider_keys.ports)
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
    now = time.time()
    collecting = {r.tags.get("dagster/partition") for r in live_runs(context.instance, store, collect_batch_job.name)}
    run_keys = {k: collect_run_key(context.instance, store, k, now) for k in keys if k not in collecting}
    requests = [dg.RunRequest(run_key=run_key, partition_key=k, tags={"forge/provider": keys[k], **store_tags(store)})
                for k, run_key in run_keys.items() if run_key is not None]
    waiting = len(keys) - len(requests)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)] if new else [],
        skip_reason=None if requests else dg.SkipReason(
            f"{waiting} ended batches have a collection run in flight or wait to be asked again"),
        cursor=json.dumps(cursor),
    )


def collect_run_key(instance: dg.DagsterInstance, store: ForgeStore, partition: str, now: float) -> str | None:
    """The run key that asks for the collection of the ended batch `partition` now (no live run collects
    it), or None while the delay after a failed run has not passed."""
    earlier = instance.get_run_records(filters=dg.RunsFilter(job_name=collect_batch_job.name,
                                                             tags={"dagster/partition": partition, **store_tags(store)}))
    if not earlier:
        return f"collect:{partition}"
    last = earlier[0]  # the newest first
    if not died(last.dagster_run) and last.end_time is not None:
        delay = min(COLLECT_RETRY_CAP_S, retry_delay(COLLECT_RETRY_BASE_S) * 2 ** (len(earlier) - 1))
        if now - last.end_time < delay:
            return None
    return f"collect:{partition}:r{len(earlier)}"
