"""Output policies on valid, prose-wrapped, truncated and schema-violating answers, for both providers,
and the structured output each policy asks the provider for."""

from __future__ import annotations

import json

import pytest

from forge_dagster.core.models import Provider, ResultItem, ResultOutcome
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.validation import validate_result
from forge_dagster.core.providers.requests import TOOL_NAME, render_request
from tests.platform.conftest import example

TICKET_SCHEMA = example("ticket_triage")["response_schema"]
GOOD = {"category": "bug", "priority": "high", "summary": "Export button does nothing."}
OFF_SCHEMA = {"category": "printer", "priority": "high", "summary": "Export button does nothing."}
TEXT_SCHEMA = {"type": "object", "required": ["text"],
               "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 120}}}
SHORT_TEXT = "Route to the bug queue: the export button does nothing."
LONG_TEXT = "The export button does nothing. " * 10


def processor(provider: str, policy: str) -> Processor:
    data = example("ticket_triage")
    data.update(output_policy=policy, provider=provider,
                model="gpt-4o-mini" if provider == "openai" else "claude-haiku-4-5",
                response_schema=TEXT_SCHEMA if policy == "text" else TICKET_SCHEMA)
    return Processor.model_validate(data)


def answer(text: str | None = None, *, stop: str = "stop", tool_input: dict | None = None) -> ResultItem:
    return ResultItem("j1a1", ResultOutcome.SUCCEEDED, status_code=200, text=text, tool_input=tool_input,
                      stop_reason=stop)


PROSE = f"Sure, here is the triage you asked for: {json.dumps(GOOD)} Let me know if anything is unclear."
FENCED = f"Here it is:\n```json\n{json.dumps(GOOD, indent=2)}\n```\n"
CUT = json.dumps(GOOD)[:40]

# (policy, case, answer, accepted output or the rejection reason's prefix)
CASES = [
    ("json", "valid", answer(json.dumps(GOOD)), GOOD),
    ("json", "prose-wrapped", answer(PROSE), "parse"),
    ("json", "fenced", answer(FENCED), "parse"),
    ("json", "truncated", answer(CUT, stop="length"), "truncated"),
    ("json", "cut without a stop reason", answer(CUT), "parse"),
    ("json", "schema-violating", answer(json.dumps(OFF_SCHEMA)), "schema"),
    ("json_in_text", "valid", answer(json.dumps(GOOD)), GOOD),
    ("json_in_text", "prose-wrapped", answer(PROSE), GOOD),
    ("json_in_text", "fenced", answer(FENCED), GOOD),
    ("json_in_text", "two objects", answer(f"{json.dumps(GOOD)} or {json.dumps(OFF_SCHEMA)}"), "parse"),
    ("json_in_text", "truncated", answer(f"Here: {CUT}", stop="length"), "truncated"),
    ("json_in_text", "schema-violating", answer(f"Here: {json.dumps(OFF_SCHEMA)}."), "schema"),
    ("text", "valid", answer(SHORT_TEXT), {"text": SHORT_TEXT}),
    ("text", "prose-wrapped", answer(f"Well, {SHORT_TEXT}"), {"text": f"Well, {SHORT_TEXT}"}),
    ("text", "truncated", answer(SHORT_TEXT, stop="length"), "truncated"),
    ("text", "schema-violating", answer(LONG_TEXT), "schema"),
]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(("policy", "case", "item", "expected"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_output_policy_accepts_only_complete_parseable_schema_valid_answers(provider, policy, case, item,
                                                                                  expected):
    verdict = validate_result(item, processor(provider, policy))
    if isinstance(expected, dict):
        assert verdict.accepted and verdict.output == expected
    else:
        assert not verdict.accepted and verdict.output is None
        assert verdict.reason.startswith(expected) and verdict.retryable  # a repair may fix it
        assert verdict.errors


@pytest.mark.parametrize(("tool_input", "stop", "expected"), [
    (GOOD, "tool_use", GOOD), (OFF_SCHEMA, "tool_use", "schema"), (GOOD, "max_tokens", "truncated")])
def test_anthropic_forced_tool_input_is_held_to_the_same_rules(tool_input, stop, expected):
    item = answer("Calling the tool.", stop=stop, tool_input=tool_input)
    verdict = validate_result(item, processor("anthropic", "json"))
    assert (verdict.output == expected) if isinstance(expected, dict) else verdict.reason.startswith(expected)


def test_json_policy_asks_each_provider_for_structured_output():
    openai_body = render_request(processor("openai", "json"), {"subject": "s", "body": "b"}, "j1a1").body
    assert openai_body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "ticket_triage", "schema": TICKET_SCHEMA, "strict": False}}
    anthropic_body = render_request(processor("anthropic", "json"), {"subject": "s", "body": "b"}, "j1a1").body
    assert anthropic_body["tools"][0]["input_schema"] == TICKET_SCHEMA
    assert anthropic_body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}


@pytest.mark.parametrize("provider", [Provider.OPENAI, Provider.ANTHROPIC])
@pytest.mark.parametrize("policy", ["json_in_text", "text"])
def test_text_policies_ask_for_no_structured_output_and_json_in_text_states_the_schema(provider, policy):
    body = render_request(processor(provider, policy), {"subject": "s", "body": "b"}, "j1a1").body
    assert not {"response_format", "tools", "tool_choice"} & set(body)
    system = body["system"] if provider == Provider.ANTHROPIC else body["messages"][0]["content"]
    assert ('"enum": [' in system) == (policy == "json_in_text")
