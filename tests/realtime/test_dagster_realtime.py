"""The realtime path through Dagster: the sensor asks for a run when realtime jobs are claimable, the
asset runs them to the end, and the probe sensor brings a paused key back."""

from __future__ import annotations

import dagster as dg

from forge_dagster.assets.realtime import realtime_outputs
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
from forge_dagster.resources.provider_keys import ProviderKeysResource
from forge_dagster.sensors.quota_sensors import key_probe_sensor
from forge_dagster.sensors.realtime_sensors import realtime_work_sensor

from .conftest import REVIEW, TICKET, enqueue


def _resources(database_url, schema, sim) -> dict:
    return {"lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema),
            "processors": ProcessorCatalogResource(), "provider_keys": ProviderKeysResource(simulator_url=sim.url)}


def _sensor(sensor, instance, resources):
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return sensor(context)


def test_realtime_sensor_requests_a_run_and_the_asset_runs_every_claimable_job(sim, store, database_url, schema):
    resources = _resources(database_url, schema, sim)
    instance = dg.DagsterInstance.ephemeral()
    idle = _sensor(realtime_work_sensor, instance, resources)
    assert idle.run_requests == [] and idle.skip_reason.skip_message == "no realtime job is claimable now"

    ids = enqueue(store, 6, TICKET) + enqueue(store, 4, REVIEW)
    result = _sensor(realtime_work_sensor, instance, resources)
    [request] = result.run_requests
    assert request.run_key.startswith("realtime:") and request.tags["forge/ready"] == str(len(ids))

    run = dg.materialize([realtime_outputs], instance=instance, resources=resources)
    assert run.success
    meta = run.asset_materializations_for_node("realtime_outputs")[0].metadata
    assert (meta["claimed"].value, meta["succeeded"].value, meta["failed"].value) == (10, 10, 0)
    assert meta["cost_usd"].value > 0
    with store.transaction() as conn:  # token usage per provider, as the batch assets report it
        booked = dict(conn.execute("SELECT provider, sum(input_tokens) FROM costs GROUP BY provider").fetchall())
    assert (meta["openai.input_tokens"].value, meta["anthropic.input_tokens"].value) == (
        booked["openai"], booked["anthropic"])
    assert meta["openai.output_tokens"].value > 0 and meta["anthropic.output_tokens"].value > 0
    assert store.jobs.counts() == {"succeeded": len(ids)}
    assert _sensor(realtime_work_sensor, instance, resources).run_requests == []


def test_probe_sensor_resumes_a_paused_key_whose_probe_is_due(sim, store, database_url, schema):
    resources = _resources(database_url, schema, sim)
    instance = dg.DagsterInstance.ephemeral()
    store.keys.register(resources["provider_keys"].ring().records())
    assert store.keys.pause("openai", "simulator", "quota_exhausted: test", base_s=0.0, cap_s=0.0).paused

    result = _sensor(key_probe_sensor, instance, resources)
    assert "resumed 1" in result.skip_reason.skip_message
    assert store.keys.get("openai", "simulator")["state"] == "active"
    probes = [r for r in sim.requests() if r["path"] == "/v1/models"]
    assert len(probes) == 1, "the probe lists models: a call that spends nothing"
