"""The OpenAI port on every endpoint, through the official SDK against the simulator: a batch submitted to the
endpoint's URL and its results read back by custom_id, and the same request answered realtime."""

from __future__ import annotations

import pytest

from forge_dagster.core.models import BatchSpec, BatchState, Provider, ProviderRequest, ResultOutcome
from forge_dagster.core.providers import ProviderPort
from forge_dagster.simulator import Simulator

from .helpers import wait_until_ended

BODIES = {
    "responses": {"model": "gpt-4o-mini", "input": "Say hello", "instructions": "Be brief.",
                  "max_output_tokens": 200},
    "embeddings": {"model": "text-embedding-3-small", "input": "a lamp", "dimensions": 32,
                   "encoding_format": "float"},
    "moderations": {"model": "omni-moderation-latest", "input": "have a nice day"},
}


def check(endpoint: str, item) -> None:
    assert item.outcome == ResultOutcome.SUCCEEDED and item.status_code == 200 and item.stop_reason == "stop"
    if endpoint == "responses":
        assert item.text and item.usage.input_tokens > 0 and item.usage.output_tokens > 0
    elif endpoint == "embeddings":
        assert len(item.vector) == 32 * 4 and item.usage.input_tokens > 0
    else:
        assert isinstance(item.tool_input["flagged"], bool) and item.usage.input_tokens == 0


@pytest.mark.parametrize("endpoint", sorted(BODIES))
def test_a_batch_goes_to_the_endpoint_url_and_its_results_match_by_custom_id(
        sim: Simulator, openai_port: ProviderPort, endpoint: str) -> None:
    requests = [ProviderRequest(f"item-{i}", BODIES[endpoint], endpoint) for i in range(3)]
    batch = BatchSpec(f"fb-{endpoint}", Provider.OPENAI, BODIES[endpoint]["model"], requests)
    submitted = openai_port.submit(batch)
    assert wait_until_ended(openai_port, submitted.provider_batch_id).state == BatchState.ENDED_COMPLETED
    assert sim.state.openai.batches[submitted.provider_batch_id].endpoint == f"/v1/{endpoint}"
    items = openai_port.results(submitted.provider_batch_id, [r.custom_id for r in requests])
    assert [i.custom_id for i in items] == ["item-0", "item-1", "item-2"]
    for item in items:
        check(endpoint, item)


@pytest.mark.parametrize("endpoint", sorted(BODIES))
def test_a_realtime_call_goes_through_the_sdk_resource_of_the_endpoint(
        sim: Simulator, openai_port: ProviderPort, endpoint: str) -> None:
    seen = len(sim.requests())
    item = openai_port.complete(ProviderRequest("j1a1", BODIES[endpoint], endpoint))
    check(endpoint, item)
    # The session's simulator may also hear a worker another test left draining: look at this call's path.
    assert f"/v1/{endpoint}" in [r["path"] for r in sim.requests()[seen:]]
