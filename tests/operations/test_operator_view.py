"""The operator's view in Dagster: ledger assets and their checks, and the relay sensor."""

from __future__ import annotations

import json

import dagster as dg

from forge_dagster.assets.operations import OPERATIONS_CHECKS, OPERATOR_VIEW_ASSETS, archive_is_whole
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.outbox_relay import OutboxRelayResource
from forge_dagster.resources.provider_keys import ProviderKeysResource
from forge_dagster.sensors.outbox_relay import outbox_relay_sensor
from tests.helpers import run_batch_round, wait_until
from tests.operations.conftest import SECRET, ticket_specs

FAKE_KEY = "sk-proj-operator-view-test-key-7a7b"


def test_ledgers_show_jobs_batches_costs_and_masked_credentials(store, catalog, ports, database_url, schema, sim):
    submit_jobs(store, ticket_specs(4))
    run_batch_round(store, catalog, ports)
    resources = {
        "lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema),
        "provider_keys": ProviderKeysResource(openai_api_key=FAKE_KEY, simulator_url=sim.url),
    }
    checks = [c for c in OPERATIONS_CHECKS if c is not archive_is_whole]  # its asset is not materialised here
    result = dg.materialize([*OPERATOR_VIEW_ASSETS, *checks], resources=resources)
    assert result.success
    meta = {node: result.asset_materializations_for_node(node)[0].metadata
            for node in ("job_ledger", "batch_ledger", "cost_ledger", "provider_credentials", "outbox_backlog")}

    assert meta["job_ledger"]["jobs_succeeded"].value == 4 and meta["job_ledger"]["jobs_total"].value == 4
    assert meta["batch_ledger"]["batches_collected"].value == 1
    assert meta["cost_ledger"]["cost_usd_total"].value > 0 and meta["cost_ledger"]["openai.input_tokens"].value > 0
    keys_table = meta["provider_credentials"]["keys"].value
    assert FAKE_KEY not in keys_table and "…7a7b" in keys_table and "simulator" in keys_table
    assert FAKE_KEY not in json.dumps({k: str(v.value) for m in meta.values() for k, v in m.items()})
    assert meta["outbox_backlog"]["undelivered"].value == 1  # the batch's notification, not yet relayed
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"outbox_lag_within_limit": True, "no_batch_open_past_a_day": True,
                           "invalid_or_dead_rate": True, "no_provider_outage": True}


def test_relay_sensor_drains_the_outbox_and_explains_itself(store, catalog, ports, database_url, schema,
                                                            receiver, sim):
    submit_jobs(store, ticket_specs(2, callback_url=receiver.url + "/cb"))
    run_batch_round(store, catalog, ports)
    resources = {
        "lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema),
        "outbox_relay": OutboxRelayResource(slack_webhook_url=receiver.url + "/slack", callback_secret=SECRET,
                                            callback_allow="127.0.0.1", base_delay_s=0.05),
    }
    instance = dg.DagsterInstance.ephemeral()
    cursor = None

    def tick():
        nonlocal cursor
        with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
            result = outbox_relay_sensor(context)
        cursor = result.cursor
        return result

    first = wait_until(lambda: (r := tick()) and json.loads(r.cursor)["delivered"] and r, timeout_s=10,
                       what="a delivering tick")
    assert first.run_requests == [] and "delivered" in first.skip_reason.skip_message
    wait_until(lambda: tick() and store.outbox.lag()[0] == 0, timeout_s=10, what="the outbox to drain")
    assert json.loads(cursor)["delivered"] == 3  # two stamps and the batch's notification
    assert len(receiver.accepted("/cb")) == 2 and len(receiver.slack_messages()) == 1
