"""Each fault knob is observable through the official SDKs (max_retries=0)."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import jsonschema
import openai
import pytest

SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "enum": ["spam", "ham"]},
                                           "score": {"type": "number", "minimum": 0, "maximum": 1}},
          "required": ["label", "score"], "additionalProperties": False}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}


def _ask(oai: openai.OpenAI, text: str = "classify this", **kw):
    return oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw)


def _ask_claude(claude: anthropic.Anthropic, text: str = "classify this", **kw):
    kw.setdefault("max_tokens", 300)
    return claude.messages.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": text}], **kw)


def test_openai_rpm_limit_answers_429_with_retry_after_and_ratelimit_headers(sim, oai):
    sim.configure(rpm_limit=2)
    ok = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}])
    assert ok.headers["x-ratelimit-limit-requests"] == "2"
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"
    _ask(oai, "two")
    with pytest.raises(openai.RateLimitError) as err:
        _ask(oai, "three")
    headers = err.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.body["code"] == "rate_limit_exceeded"


def test_anthropic_tpm_limit_answers_429_with_anthropic_ratelimit_headers(sim, claude):
    sim.configure(tpm_limit=40)
    ok = claude.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "x" * 100}])
    assert ok.headers["anthropic-ratelimit-tokens-limit"] == "40"
    with pytest.raises(anthropic.RateLimitError) as err:
        _ask_claude(claude, "y" * 100)
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert "anthropic-ratelimit-tokens-reset" in err.value.response.headers
    assert err.value.body["error"]["type"] == "rate_limit_error"


def test_rate_limits_are_counted_per_api_key(sim, oai):
    sim.configure(rpm_limit=1)
    _ask(oai)
    other = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-another-key", max_retries=0)
    assert _ask(other).choices[0].message.content


def test_openai_quota_exhaustion_is_insufficient_quota_until_refilled(sim, oai):
    sim.configure(quota_tokens=10)
    _ask(oai)
    with pytest.raises(openai.RateLimitError) as err:
        _ask(oai)
    assert err.value.code == "insufficient_quota"
    sim.refill_quota()
    assert _ask(oai).choices[0].finish_reason == "stop"


def test_anthropic_quota_exhaustion_is_a_credit_balance_error(sim, claude):
    sim.configure(quota_tokens=10)
    _ask_claude(claude)
    with pytest.raises(anthropic.BadRequestError) as err:
        _ask_claude(claude)
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "credit balance is too low" in err.value.body["error"]["message"]


def test_5xx_rate_gives_openai_server_errors(sim, oai):
    sim.configure(error_5xx_rate=1.0)
    with pytest.raises(openai.InternalServerError) as err:
        _ask(oai)
    assert err.value.status_code in (500, 502, 503)


def test_5xx_rate_gives_anthropic_529_overloaded_among_server_errors(sim, claude):
    sim.configure(error_5xx_rate=1.0)
    statuses = set()
    for i in range(24):
        with pytest.raises(anthropic.InternalServerError) as err:
            _ask_claude(claude, f"question {i}")
        statuses.add(err.value.status_code)
        if err.value.status_code == 529:
            assert isinstance(err.value, anthropic.OverloadedError)
            assert err.value.body["error"]["type"] == "overloaded_error"
    assert 529 in statuses and statuses <= {500, 502, 503, 529}


def test_a_retried_request_gets_a_fresh_fault_roll(sim):
    sim.configure(error_5xx_rate=0.5)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "retry me"}]}
    with httpx.Client(headers={"Authorization": "Bearer sk-x"}) as client:
        statuses = [client.post(sim.openai_base_url + "/chat/completions", json=body).status_code
                    for _ in range(20)]
    assert 200 in statuses and any(s >= 500 for s in statuses)


def test_malformed_rate_gives_output_that_is_not_json(sim, oai, claude):
    sim.configure(malformed_rate=1.0)
    content = _ask(oai, response_format=RESPONSE_FORMAT).choices[0].message.content
    with pytest.raises(ValueError):
        json.loads(content)
    message = _ask_claude(claude, output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    with pytest.raises(ValueError):
        json.loads(message.content[0].text)


def test_schema_violation_rate_gives_json_that_fails_the_schema(sim, oai, claude):
    sim.configure(schema_violation_rate=1.0)
    content = _ask(oai, response_format=RESPONSE_FORMAT).choices[0].message.content
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(content), SCHEMA)
    tool = {"name": "verdict", "description": "record", "input_schema": SCHEMA}
    message = _ask_claude(claude, tools=[tool], tool_choice={"type": "tool", "name": "verdict"})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(message.content[0].input, SCHEMA)


def test_truncation_rate_cuts_the_text_and_reports_length_and_max_tokens(sim, oai, claude):
    full_openai = _ask(oai, "tell me a story").choices[0].message.content
    full_claude = _ask_claude(claude, "tell me a story").content[0].text
    sim.configure(truncation_rate=1.0)
    cut = _ask(oai, "tell me a story").choices[0]
    assert cut.finish_reason == "length"
    assert full_openai.startswith(cut.message.content) and len(cut.message.content) < len(full_openai)
    message = _ask_claude(claude, "tell me a story")
    assert message.stop_reason == "max_tokens"
    assert full_claude.startswith(message.content[0].text) and len(message.content[0].text) < len(full_claude)


def test_refusal_rate_sets_openai_refusal_and_anthropic_stop_reason(sim, oai, claude):
    sim.configure(refusal_rate=1.0)
    message = _ask(oai).choices[0].message
    assert message.refusal and message.content is None
    assert _ask_claude(claude).stop_reason == "refusal"


def test_latency_ms_delays_responses_by_at_least_that_much(sim, oai):
    sim.configure(latency_ms=150, route_latency_ms={"GET /v1/models": 100})
    started = time.monotonic()
    oai.models.list()
    assert time.monotonic() - started >= 0.25
