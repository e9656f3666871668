"""The sensor that probes paused provider keys back into service and ends drained submission holds."""

import json

import dagster as dg

from forge_dagster.core.providers.quota import probe_due_keys, release_drained_holds
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.provider_keys import ProviderKeysResource


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def key_probe_sensor(
    context: dg.SensorEvaluationContext, lease_store: LeaseStoreResource, provider_keys: ProviderKeysResource,
):
    """Probes each paused key whose time has come with a call that spends nothing (listing models);
    a key that answers is back in service, one that does not waits twice as long. Also ends the batch
    submission holds of models whose in-flight batches have drained."""
    store = lease_store.store
    ring = provider_keys.ring()
    store.keys.register(ring.records())
    try:
        report = probe_due_keys(store, ring)
    finally:
        ring.close()
    released = release_drained_holds(store)
    for error in report.errors:
        context.log.info(f"probe: {error}")
    paused = sum(1 for k in store.keys.all() if k["state"] == "paused")
    cursor = json.dumps({"probed": report.probed, "resumed": report.resumed, "holds_released": len(released)})
    return dg.SensorResult(skip_reason=dg.SkipReason(
        f"probed {report.probed} keys, resumed {len(report.resumed)}, {paused} still paused; "
        f"{len(released)} submission holds released"), cursor=cursor)
