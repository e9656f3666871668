"""Fixtures for the nightly runtime: a GPU mutex of its own per test on the real Redis, and the
nightly resources wired to the test schema and the simulator (Ollama, providers, Slack)."""

from __future__ import annotations

import uuid

import pytest

from forge_dagster.core.nightly.gpu_mutex import connect
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource
from forge_dagster.resources.provider_keys import ProviderKeysResource

MODEL = "llama3.2:3b"


@pytest.fixture
def mutex_name(redis_url):
    """A mutex name no other test (or concurrent suite on the same Redis) uses; its keys are deleted after."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client = connect(redis_url)
    try:
        keys = list(client.scan_iter(f"*{name}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def resources(database_url, schema, sim, redis_url, mutex_name):
    return {
        "lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema),
        "provider_keys": ProviderKeysResource(simulator_url=sim.url),
        "gpu_mutex": GpuMutexResource(redis_url=redis_url, name=mutex_name, ttl_ms=5000, acquire_timeout_s=30),
        "ollama": OllamaResource(host=sim.ollama_host, model=MODEL),
    }


def model_calls(sim) -> list[dict]:
    """Requests that ran the local model on a prompt (Forge asks through /api/chat). Loading and unloading
    use /api/generate with an empty prompt and are counted by `ollama_requests`."""
    return [r for r in sim.requests() if r["path"] in ("/api/chat", "/api/embed")]


def ollama_requests(sim, path: str) -> list[dict]:
    return [r for r in sim.requests() if r["path"] == path]
