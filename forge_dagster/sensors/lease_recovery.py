"""A sensor that frees expired leases so crashed workers' jobs run again without an operator."""

import json

import dagster as dg

from forge_dagster.core.ops.notify import sweep_notices
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.sensors.intervals import sensor_interval


@dg.sensor(minimum_interval_seconds=sensor_interval(30), default_status=dg.DefaultSensorStatus.RUNNING)
def lease_recovery_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Returns expired leases to pending (or dead when their attempts are spent). The cursor keeps the
    running totals, so the sensor's history shows how much it recovered."""
    report = lease_store.jobs.sweep_expired(notices=sweep_notices)
    totals = json.loads(context.cursor or "{}")
    cursor = json.dumps({"ticks": totals.get("ticks", 0) + 1,
                         "requeued": totals.get("requeued", 0) + report.requeued,
                         "dead": totals.get("dead", 0) + report.dead})
    if report.requeued or report.dead:
        context.log.info(f"lease recovery: {report.requeued} requeued, {report.dead} dead")
        return dg.SensorResult(skip_reason=f"recovered {report.requeued} expired leases, {report.dead} jobs dead",
                               cursor=cursor)
    return dg.SensorResult(skip_reason="no expired leases", cursor=cursor)
