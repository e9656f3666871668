"""Sensors of the batch pipeline: one sees pending work, one polls every in-flight batch each tick."""


import json
import os
from pathlib import Path

import dagster as dg

from forge_dagster.assets.batch_pipeline import batch_partition_key, batch_partitions
from forge_dagster.core.collection import poll_open_batches
from forge_dagster.core.config import load_settings
from forge_dagster.jobs.batch_jobs import build_batches_job, collect_batch_job
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.providers import ProviderPortsResource


def _inbox_files() -> int:
    inbox = Path(os.path.join(load_settings().forge_home, "inbox"))
    return len(list(inbox.glob("*.jsonl"))) if inbox.is_dir() else 0


@dg.sensor(job=build_batches_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def pending_work_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Requests a batch-building run when jobs are waiting, files are in the inbox, or a submission
    was left unfinished."""
    store = lease_store.store
    pending, top_id = store.batches.pending_work()
    stale = len(store.batches.stale_submitting(60))
    files = _inbox_files()
    if not (pending or stale or files):
        return dg.SkipReason("no pending batch jobs, no inbox files, no unfinished submissions")
    # The key changes whenever new work arrives, so the same work is never requested twice.
    run_key = f"build:{top_id}:{pending}:{files}:{stale}"
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={"forge/pending": str(pending)})],
        cursor=json.dumps({"pending": pending, "top_id": top_id}),
    )


@dg.sensor(job=collect_batch_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def batch_status_sensor(
    context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource, providers: ProviderPortsResource,
):
    """Polls every in-flight provider batch once per tick and requests the collection run of each
    batch that ended (one run per batch: the run key is the batch's)."""
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
    keys = [batch_partition_key(b) for b in ended]
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new = [k for k in keys if k not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"collect:{k}", partition_key=k) for k in keys],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new)] if new else [],
        cursor=json.dumps(cursor),
    )
