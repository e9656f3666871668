"""Fixtures for the batch pipeline: the engine's parts wired to a test schema and the simulator."""

from __future__ import annotations

import json

import pytest

from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
from forge_dagster.resources.provider_keys import ProviderKeysResource


@pytest.fixture
def catalog(store):
    """The registry's catalog of the test's store (the packaged processors registered), as the pipeline reads it."""
    from forge_dagster.core.platform.registry import load_catalog

    return load_catalog(store)


@pytest.fixture
def ports(sim):
    return ProviderKeysResource(simulator_url=sim.url).ports


@pytest.fixture
def resources(database_url, schema, sim):
    return {
        "lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema),
        "processors": ProcessorCatalogResource(),
        "provider_keys": ProviderKeysResource(simulator_url=sim.url),
    }


def ticket(i: int) -> dict:
    return {"id": f"t{i}", "processor": "ticket_triage",
            "input": {"subject": f"Ticket {i}", "body": "The export button does nothing."}}


def review(i: int) -> dict:
    return {"id": f"r{i}", "processor": "review_sentiment", "input": {"review": f"Review {i}: works well."}}


def write_inbox(folder, lines: list[dict], name: str = "jobs.jsonl"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder
