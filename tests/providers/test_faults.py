"""Each injected fault drives the port to the right normalised outcome, on the real SDK clients."""

from __future__ import annotations

import asyncio
import json

import pytest

from forge_dagster.core.models import ErrorClass, Provider, ProviderError, ProviderRequest, ResultOutcome
from forge_dagster.core.providers import ProviderCredentials, ProviderPort, build_port
from forge_dagster.simulator import Simulator

from .helpers import TEST_KEYS, make_batch, request_body, wait_until_ended


def _ask(port: ProviderPort, prompt: str = "Name a colour.", **extra: object) -> ProviderRequest:
    return ProviderRequest("rt-1", request_body(port.provider, prompt, **extra))


def _collect(port: ProviderPort, n: int = 3, **extra: object) -> list:
    batch = make_batch(port.provider, n, **extra)
    submitted = port.submit(batch)
    wait_until_ended(port, submitted.provider_batch_id)
    return port.results(submitted.provider_batch_id, [r.custom_id for r in batch.requests])


def test_realtime_complete_returns_normalised_item(sim: Simulator, port: ProviderPort) -> None:
    item = port.complete(_ask(port))
    assert item.outcome == ResultOutcome.SUCCEEDED and item.custom_id == "rt-1"
    assert item.text and item.stop_reason == "stop" and item.usage.input_tokens > 0


def test_async_complete_works_across_event_loops(sim: Simulator, port: ProviderPort) -> None:
    async def two_at_once() -> list:
        return list(await asyncio.gather(port.acomplete(_ask(port)), port.acomplete(_ask(port, "Another?"))))

    first = asyncio.run(two_at_once())
    second = asyncio.run(two_at_once())  # a new loop must not reuse the dead loop's connections

    async def close() -> None:
        await port.aclose()

    asyncio.run(close())
    for item in first + second:
        assert item.outcome == ResultOutcome.SUCCEEDED and item.text and item.stop_reason == "stop"


def test_rate_limit_is_rate_limited_with_retry_after(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(rpm_limit=1)
    port.complete(_ask(port))
    with pytest.raises(ProviderError) as caught:
        port.complete(_ask(port, "Another colour?"))
    error = caught.value
    assert error.error_class == ErrorClass.RATE_LIMITED and error.retryable
    assert error.status_code == 429
    assert error.retry_after_s is not None and 0 < error.retry_after_s <= 60


def test_rate_limited_batch_create_is_not_ambiguous_and_creates_nothing(
    sim: Simulator, port: ProviderPort
) -> None:
    sim.configure(rpm_limit=1)
    port.complete(_ask(port))  # uses up the minute's only request
    with pytest.raises(ProviderError) as caught:
        port.submit(make_batch(port.provider, 2))
    assert caught.value.error_class == ErrorClass.RATE_LIMITED and not caught.value.ambiguous
    sim.configure(rpm_limit=None)
    assert port.find_submitted(make_batch(port.provider, 2), since=0) is None


def test_exhausted_quota_is_quota_exhausted_until_refilled(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(quota_tokens=1)
    port.complete(_ask(port))
    with pytest.raises(ProviderError) as caught:
        port.complete(_ask(port))
    assert caught.value.error_class == ErrorClass.QUOTA_EXHAUSTED and not caught.value.retryable
    sim.refill_quota()
    assert port.complete(_ask(port)).outcome == ResultOutcome.SUCCEEDED


def test_server_errors_are_transient(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(error_5xx_rate=1.0)
    with pytest.raises(ProviderError) as caught:
        port.complete(_ask(port))
    assert caught.value.error_class == ErrorClass.TRANSIENT and caught.value.retryable
    assert caught.value.status_code is not None and caught.value.status_code >= 500


def test_overloaded_529_is_transient(sim: Simulator, anthropic_port: ProviderPort) -> None:
    sim.configure(error_5xx_rate=1.0)
    seen: set[int] = set()
    for i in range(40):  # the simulator picks among 500/502/503/529 per request, deterministically
        with pytest.raises(ProviderError) as caught:
            anthropic_port.complete(_ask(anthropic_port, f"question {i}"))
        assert caught.value.error_class == ErrorClass.TRANSIENT
        seen.add(caught.value.status_code or 0)
        if 529 in seen:
            break
    assert 529 in seen


def test_connection_refused_is_transient_and_ambiguous(sim: Simulator, port: ProviderPort) -> None:
    unreachable = ProviderCredentials(TEST_KEYS[port.provider], "http://127.0.0.1:9/v1", timeout_s=2)
    dead = build_port(port.provider, unreachable)
    try:
        with pytest.raises(ProviderError) as caught:
            dead.complete(_ask(port))
    finally:
        dead.close()
    assert caught.value.error_class == ErrorClass.TRANSIENT and caught.value.ambiguous


def test_invalid_request_is_invalid_request(sim: Simulator, port: ProviderPort) -> None:
    with pytest.raises(ProviderError) as caught:
        port.complete(ProviderRequest("bad", {"model": "", "max_tokens": 5, "messages": []}))
    assert caught.value.error_class == ErrorClass.INVALID_REQUEST and caught.value.status_code == 400


def test_4xx_inside_a_result_line_is_an_errored_item(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(line_4xx_rate=1.0)
    items = _collect(port)
    _assert_all_errored_4xx(items)
    if port.provider == Provider.OPENAI:
        assert all(i.raw and i.raw["error"] is None for i in items)  # the trap: error null, status 4xx


def test_4xx_lines_in_the_openai_error_file_are_errored_items(
    sim: Simulator, openai_port: ProviderPort
) -> None:
    sim.configure(line_4xx_rate=1.0, line_4xx_file="error")
    _assert_all_errored_4xx(_collect(openai_port))


def _assert_all_errored_4xx(items: list) -> None:
    assert len(items) == 3
    for item in items:
        assert item.outcome == ResultOutcome.ERRORED
        assert item.error is not None and item.error.status_code and 400 <= item.error.status_code < 500
        assert item.error.error_class in (ErrorClass.INVALID_REQUEST, ErrorClass.RATE_LIMITED)
        assert item.error.message


def test_malformed_output_is_still_a_succeeded_item(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(malformed_rate=1.0)
    for item in _collect(port, prompt='Answer as JSON: {"colour": "..."}'):
        assert item.outcome == ResultOutcome.SUCCEEDED and item.text
        with pytest.raises(ValueError):
            json.loads(item.text)


def test_truncated_output_has_stop_reason_length(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(truncation_rate=1.0)
    items = _collect(port)
    assert {i.outcome for i in items} == {ResultOutcome.SUCCEEDED}
    assert {i.stop_reason for i in items} == {"length"}


def test_refusal_has_stop_reason_refusal(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(refusal_rate=1.0)
    items = _collect(port)
    assert {i.stop_reason for i in items} == {"refusal"}


def test_tool_call_is_parsed_into_tool_input(sim: Simulator, port: ProviderPort) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    if port.provider == Provider.OPENAI:
        extra = {
            "tools": [{"type": "function", "function": {"name": "record", "parameters": schema}}],
            "tool_choice": {"type": "function", "function": {"name": "record"}},
        }
    else:
        extra = {
            "tools": [{"name": "record", "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": "record"},
        }
    realtime = port.complete(_ask(port, **extra))
    batched = _collect(port, 2, **extra)
    for item in [realtime, *batched]:
        assert item.outcome == ResultOutcome.SUCCEEDED
        assert item.stop_reason == "tool_use"
        assert isinstance(item.tool_input, dict) and isinstance(item.tool_input.get("colour"), str)


def test_reasoning_tokens_are_reported(sim: Simulator, openai_port: ProviderPort) -> None:
    body = {"model": "o3-mini", "messages": [{"role": "user", "content": "Hi"}]}
    item = openai_port.complete(ProviderRequest("r", body))
    assert item.usage.reasoning_tokens > 0
