"""A sensor that frees expired leases so crashed workers' jobs run again without an operator."""


import dagster as dg

from forge_dagster.resources.lease_store import LeaseStoreResource


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def lease_recovery_sensor(context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource):
    """Returns expired leases to pending (or dead when their attempts are spent)."""
    report = lease_store.store.sweep_expired()
    if report.requeued or report.dead:
        context.log.info(f"lease recovery: {report.requeued} requeued, {report.dead} dead")
        return dg.SkipReason(f"recovered {report.requeued} expired leases, {report.dead} jobs dead")
    return dg.SkipReason("no expired leases")
