"""The sensor that starts realtime runs when realtime jobs are waiting."""

import json

import dagster as dg

from forge_dagster.assets.realtime import realtime_job
from forge_dagster.resources.lease_store import LeaseStoreResource

_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]


@dg.sensor(job=realtime_job, minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING)
def realtime_work_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Requests a realtime run when realtime jobs are claimable and no realtime run is in flight."""
    ready, top_id = lease_store.store.keys.realtime_ready()
    if not ready:
        return dg.SkipReason("no realtime job is claimable now")
    running = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=realtime_job.name, statuses=_IN_FLIGHT), limit=1)
    if running:
        return dg.SkipReason(f"{ready} realtime jobs wait for run {running[0].run_id[:8]}, still in flight")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"realtime:{top_id}:{ready}", tags={"forge/ready": str(ready)})],
        cursor=json.dumps({"ready": ready, "top_id": top_id}),
    )
