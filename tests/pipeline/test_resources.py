"""Resources make their per-run clients when a run (or tick) starts and close them when it ends."""

import dagster as dg

from forge_dagster.resources.ollama import OllamaResource
from forge_dagster.resources.provider_keys import ProviderKeysResource

SIM = "http://127.0.0.1:9"  # nothing is called: clients are made and closed, never used


def test_a_run_has_one_key_ring_whose_ports_close_at_its_end():
    with dg.build_resources({"provider_keys": ProviderKeysResource(simulator_url=SIM)}) as resources:
        ring = resources.provider_keys.ring()
        assert resources.provider_keys.ring() is ring  # the run's ring, not a new one per call
        key = ring.keys[0]
        port = ring.port(key)
        assert ring.built(key) is port
    assert ring.built(key) is None  # closed in teardown


def test_the_batch_ports_are_shared_per_process_and_outlive_a_run():
    with dg.build_resources({"provider_keys": ProviderKeysResource(simulator_url=SIM)}) as resources:
        ports = resources.provider_keys.ports
    assert ProviderKeysResource(simulator_url=SIM).ports is ports
    assert ProviderKeysResource(simulator_url=SIM, timeout_s=5).ports is not ports


def test_a_run_has_its_own_ollama_client_closed_at_its_end():
    with dg.build_resources({"ollama": OllamaResource(host=SIM)}) as resources:
        runtime = resources.ollama.runtime
        assert resources.ollama.runtime is runtime and not runtime.client._client.is_closed
    assert runtime.client._client.is_closed
