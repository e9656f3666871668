"""A sensor that drains the transactional outbox: notifications to Slack, stamps to callback URLs."""

import json

import dagster as dg

from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.outbox_relay import OutboxRelayResource


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def outbox_relay_sensor(
    context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource, outbox_relay: OutboxRelayResource,
):
    """Delivers committed outbox rows at least once, in order per key: the tick's notifications as one
    grouped Slack message, each stamp as a signed POST. Failed deliveries wait for their backoff."""
    relay = outbox_relay.relay(lease_store.store)
    try:
        report = relay.drain(deadline_s=20)
    finally:
        relay.close()
    for error in report.errors[:5]:
        context.log.warning(f"outbox relay: {error}")
    cursor = json.loads(context.cursor or "{}")
    cursor = {"delivered": cursor.get("delivered", 0) + report.delivered,
              "failed": cursor.get("failed", 0) + report.failed, "held": report.held}
    return dg.SensorResult(skip_reason=dg.SkipReason(report.summary()), cursor=json.dumps(cursor))
