"""The sensor that starts realtime runs when realtime jobs are waiting (one realtime run at a time)."""

import json
import time

import dagster as dg

from forge_dagster.assets.realtime import realtime_job
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.sensors.batch_sensors import (
    REPEAT_UNCHANGED_S,
    last_requested_died,
    run_in_flight,
    work_run_key,
)
from forge_dagster.sensors.intervals import retry_delay, sensor_interval
from forge_dagster.sensors.run_liveness import store_tags


@dg.sensor(job=realtime_job, minimum_interval_seconds=sensor_interval(10), default_status=dg.DefaultSensorStatus.RUNNING)
def realtime_work_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Requests a realtime run when realtime jobs are claimable and no realtime run is in flight. Jobs a
    run released back (every key paused) come due again under a new run key (see batch_sensors)."""
    store = lease_store.store
    due = store.batches.due_work("realtime")
    if not due.jobs:
        return dg.SensorResult(skip_reason="no realtime job is claimable now", cursor=context.cursor)
    running = run_in_flight(context.instance, store, realtime_job.name)
    if running is not None:
        return dg.SensorResult(skip_reason=f"{due.jobs} realtime jobs wait for run {running.run_id[:8]}, still "
                                           "in flight", cursor=context.cursor)
    cursor = json.loads(context.cursor or "{}")
    run_key, cursor = work_run_key("realtime", due.signature, cursor, time.time(),
                                   ask_now=last_requested_died(context.instance, cursor))
    if run_key is None:
        return dg.SensorResult(skip_reason=f"{due.jobs} realtime jobs unchanged since run key {cursor['run_key']}; "
                                           f"asking again {retry_delay(REPEAT_UNCHANGED_S):g}s after it", cursor=context.cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={"forge/ready": str(due.jobs), **store_tags(store)})],
        cursor=json.dumps(cursor),
    )
