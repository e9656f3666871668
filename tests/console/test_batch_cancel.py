"""Cancelling a provider batch from the console: the same engine call as `forge batches cancel`, behind the
same guard; what finished is harvested, the rest requeued, the action recorded with its reason."""

from __future__ import annotations

from starlette.testclient import TestClient

from forge_dagster.console import ConsoleConfig, create_app
from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import JobSpec
from forge_dagster.resources.provider_keys import ProviderKeysResource
from tests.console.conftest import TOKEN, csrf_of


def test_a_batch_cancelled_from_its_page_is_harvested_requeued_and_recorded(store, sim):
    catalog = load_catalog(store)
    ports = ProviderKeysResource(simulator_url=sim.url).ports
    sim.configure(batch_processing_s=1000, cancel_complete_fraction=0.5)
    ids = submit_jobs(store, [JobSpec("ticket_triage", {"subject": f"T{i}", "body": "It broke."},
                                      external_id=f"c{i}") for i in range(10)]).accepted
    build_and_submit(store, catalog, ports)
    [batch] = store.batches.open_batches()
    with TestClient(create_app(store, ConsoleConfig(token=TOKEN, batch_ports=lambda: ports))) as client:
        client.post("/login", data={"token": TOKEN})
        page = client.get(f"/batches/{batch['id']}").text
        assert "Cancel batch" in page
        assert client.post(f"/batches/{batch['id']}/cancel", data={"csrf": csrf_of(page), "then": "requeue"}
                           ).status_code == 403  # no reason
        done = client.post(f"/batches/{batch['id']}/cancel",
                           data={"csrf": csrf_of(page), "reason": "wrong prompt", "then": "requeue"})
        assert done.status_code == 200 and "cancelled at the provider" in done.text
    states = [store.jobs.get(j)["state"] for j in ids]
    assert set(states) <= {"succeeded", "pending", "invalid"}  # harvested, or back in the queue
    assert store.batches.get(batch["id"])["state"] in ("ended_cancelled", "collected")
    [action] = [a for a in store.jobs.operator_actions() if a["action"] == "cancel_batch"]
    assert action["actor"] == "operator:console" and "wrong prompt" in action["reason"]
