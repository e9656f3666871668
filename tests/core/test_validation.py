"""Fail-closed validation: only a complete, HTTP 200, parseable, schema-valid result is ever accepted."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from forge_dagster.core.models import ErrorClass, ProviderError, ResultItem, ResultOutcome
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR, load_processors
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.schema_compiler import compile_schema
from forge_dagster.core.platform.validation import extract_json_object, schema_errors, validate_result

CATALOG = load_processors(PACKAGE_PROCESSORS_DIR)
TRIAGE = CATALOG["ticket_triage"]  # openai, json policy (whole text is JSON)
SENTIMENT = CATALOG["review_sentiment"]  # anthropic, json policy (forced tool input)
GOOD_TICKET = {"category": "bug", "priority": "high", "summary": "Login fails with error 500."}
GOOD_REVIEW = {"sentiment": "mixed", "score": 0.6, "aspects": ["battery", "delivery"]}


def policy(output_policy: str, schema: dict | None = TRIAGE.response_schema) -> Processor:
    return TRIAGE.model_copy(update={"output_policy": output_policy, "response_schema": schema})


def result(**fields) -> ResultItem:
    base = {
        "custom_id": "j1a1",
        "outcome": ResultOutcome.SUCCEEDED,
        "status_code": 200,
        "stop_reason": "stop",
    }
    return ResultItem(**{**base, **fields})


# --- acceptance -------------------------------------------------------------------------------------------


def test_openai_json_text_that_fits_the_schema_is_accepted():
    verdict = validate_result(result(text=json.dumps(GOOD_TICKET)), TRIAGE)
    assert (
        verdict.accepted and verdict.output == GOOD_TICKET and verdict.errors == [] and verdict.reason == "ok"
    )


def test_anthropic_tool_input_that_fits_the_schema_is_accepted():
    item = result(stop_reason="tool_use", tool_input=GOOD_REVIEW, text="Here you go.")
    assert validate_result(item, SENTIMENT).output == GOOD_REVIEW


def test_realtime_result_without_a_status_code_is_accepted():
    assert validate_result(result(status_code=None, text=json.dumps(GOOD_TICKET)), TRIAGE).accepted


@pytest.mark.parametrize(
    "text",
    [
        f"Sure! Here is the triage: {json.dumps(GOOD_TICKET)} Let me know if you need more.",
        f"Result:\n```json\n{json.dumps(GOOD_TICKET, indent=2)}\n```\nDone.",
        f"```\n{json.dumps(GOOD_TICKET)}\n```",
        f"Some {{braces}} in prose, then {json.dumps(GOOD_TICKET)}",
    ],
)
def test_json_in_text_extracts_exactly_one_object_from_prose_or_fence(text):
    verdict = validate_result(result(text=text), policy("json_in_text"))
    assert verdict.accepted and verdict.output == GOOD_TICKET


def test_text_policy_wraps_the_text_and_checks_an_optional_schema():
    assert validate_result(result(text="hello"), policy("text", None)).output == {"text": "hello"}
    short = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 3}}}
    verdict = validate_result(result(text="hello"), policy("text", short))
    assert not verdict.accepted and verdict.reason == "schema: 'hello' is too long"


# --- rejection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason", "retryable"),
    [
        ({"stop_reason": "length"}, "truncated: length", True),
        ({"stop_reason": "max_tokens"}, "truncated: max_tokens", True),
        ({"stop_reason": "refusal"}, "refusal", False),
        ({"stop_reason": "content_filter"}, "refusal", False),
        ({"stop_reason": "pause_turn"}, "stop: unexpected stop_reason 'pause_turn'", False),
        ({"status_code": 400, "raw": {"error": {"message": "bad schema"}}}, "http 400: bad schema", False),
        ({"status_code": 404}, "http 404: non-200 status", False),
        ({"status_code": 500}, "http 500: non-200 status", True),
        ({"status_code": 429}, "http 429: non-200 status", True),
        ({"outcome": ResultOutcome.REQUEUE}, "requeue: did not run to completion", True),
    ],
)
def test_complete_looking_output_is_still_rejected_when_the_envelope_says_no(fields, reason, retryable):
    verdict = validate_result(result(text=json.dumps(GOOD_TICKET), **fields), TRIAGE)
    assert not verdict.accepted and verdict.output is None
    assert verdict.reason == reason and verdict.retryable is retryable and verdict.errors


def test_openai_line_with_4xx_status_and_null_error_is_rejected():
    raw = {
        "id": "r1",
        "custom_id": "j1a1",
        "response": {"status_code": 400, "body": {"error": {"message": "x"}}},
    }
    verdict = validate_result(result(status_code=400, raw=raw, text=json.dumps(GOOD_TICKET)), TRIAGE)
    assert not verdict.accepted and verdict.reason == "http 400: x"


@pytest.mark.parametrize(
    ("error", "retryable", "reason"),
    [
        (ProviderError(ErrorClass.RATE_LIMITED, "slow down", status_code=429), True, "http 429: slow down"),
        (ProviderError(ErrorClass.TRANSIENT, "overloaded", status_code=529), True, "http 529: overloaded"),
        (ProviderError(ErrorClass.INVALID_REQUEST, "bad", status_code=400), False, "http 400: bad"),
        (ProviderError(ErrorClass.QUOTA_EXHAUSTED, "no credit"), False, "quota_exhausted: no credit"),
    ],
)
def test_errored_item_is_retryable_exactly_when_its_provider_error_is(error, retryable, reason):
    verdict = validate_result(result(outcome=ResultOutcome.ERRORED, status_code=None, error=error), TRIAGE)
    assert not verdict.accepted and verdict.retryable is retryable and verdict.reason == reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"category": "bug", "priority": "high", "summary": "x"', "parse: not JSON"),
        (f"```json\n{json.dumps(GOOD_TICKET)}\n```", "parse: not JSON"),  # json policy wants bare JSON
        ('{"category": "bug", "priority": "high", "summary": NaN}', "parse: not JSON"),
        ("[1, 2]", "parse: JSON is a list, not an object"),
        ("   ", "parse: empty output"),
    ],
)
def test_malformed_json_is_rejected_as_retryable(text, reason):
    verdict = validate_result(result(text=text), TRIAGE)
    assert not verdict.accepted and verdict.retryable and verdict.reason == reason


def test_missing_output_is_rejected():
    assert validate_result(result(text=None), TRIAGE).reason == "parse: empty output"
    tool = validate_result(result(stop_reason="tool_use", tool_input=["x"]), SENTIMENT)  # type: ignore[arg-type]
    assert tool.reason == "parse: tool input is not an object"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I could not decide.", "parse: no JSON object in text"),
        (f"{json.dumps(GOOD_TICKET)} or maybe {json.dumps(GOOD_TICKET)}", "parse: 2 JSON objects in text"),
        (f"```json\n{{}}\n```\n```json\n{json.dumps(GOOD_TICKET)}\n```", "parse: 2 JSON objects in text"),
        ("```json\n{not json}\n```", "parse: no JSON object in text"),
    ],
)
def test_json_in_text_with_zero_or_several_objects_is_rejected(text, reason):
    verdict = validate_result(result(text=text), policy("json_in_text"))
    assert not verdict.accepted and verdict.retryable and verdict.reason.startswith(reason)


def test_schema_violations_are_all_reported_sorted_with_paths():
    bad = {"category": "nope", "summary": "", "extra": 1}
    verdict = validate_result(result(text=json.dumps(bad)), TRIAGE)
    assert not verdict.accepted and verdict.retryable
    assert verdict.errors == [
        "$: 'priority' is a required property",
        "$: Additional properties are not allowed ('extra' was unexpected)",
        "$.category: 'nope' is not one of ['billing', 'bug', 'account', 'feature_request', 'how_to', 'other']",
        "$.summary: '' should be non-empty",
    ]
    assert verdict.reason == "schema: 'priority' is a required property"


def test_nested_schema_violation_names_the_array_index():
    review = {**GOOD_REVIEW, "score": 1.5, "aspects": ["ok", ""]}
    verdict = validate_result(result(stop_reason="tool_use", tool_input=review), SENTIMENT)
    assert verdict.errors == [
        "$.aspects[1]: '' should be non-empty",
        "$.score: 1.5 is greater than the maximum of 1",
    ]


def test_schemas_outside_the_compiled_subset_are_still_enforced():
    schema = {
        "type": "object",
        "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "properties": {"code": {"$ref": "#/$defs/code"}, "n": {"type": "integer", "multipleOf": 5}},
        "patternProperties": {"^x-": {"type": "boolean"}},
        "required": ["code"],
    }
    processor = policy("json", schema)
    assert compile_schema(schema) is None
    assert validate_result(result(text='{"code": "ABC", "n": 10, "x-a": true}'), processor).accepted
    verdict = validate_result(result(text='{"code": "abc", "n": 7, "x-a": 1}'), processor)
    assert len(verdict.errors) == 3 and not verdict.accepted


def test_schema_errors_is_empty_for_a_valid_output_and_lists_problems_otherwise():
    assert schema_errors(TRIAGE, GOOD_TICKET) == []
    assert schema_errors(TRIAGE, {**GOOD_TICKET, "priority": "p0"})[0].startswith(
        "$.priority: 'p0' is not one of"
    )


def test_json_in_text_ignores_code_blocks_of_other_languages():
    text = f"```python\nprint('{{}}')\n```\n{json.dumps(GOOD_TICKET)}"
    assert extract_json_object(text) == (GOOD_TICKET, "")
    assert (
        extract_json_object(f"```json\n{json.dumps(GOOD_TICKET)}\n```\n```python\nx = {{}}\n```")[0]
        == GOOD_TICKET
    )


# --- properties -------------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, 2.5, -0.5, 1e300]),
    st.text(alphabet="ab01", max_size=3),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("pqrz"), inner, max_size=4),
    max_leaves=12,
)
NUMBERS = st.one_of(st.integers(-2, 2), st.sampled_from([0.5, -1.5, 1.0]))
TYPES = st.sampled_from(["string", "object", "array", "boolean", "null", "number", "integer"])
LEAF_SCHEMA = st.one_of(
    st.booleans(),
    st.fixed_dictionaries(
        {},
        optional={
            "type": TYPES | st.lists(TYPES, min_size=1, max_size=3, unique=True),
            "enum": st.lists(SCALARS, max_size=4),
            "const": SCALARS,
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(0, 3),
            "pattern": st.sampled_from(["^a", "b$", "[01]+", "^$"]),
            "minimum": NUMBERS,
            "maximum": NUMBERS,
            "exclusiveMinimum": NUMBERS,
            "exclusiveMaximum": NUMBERS,
            "minItems": st.integers(0, 3),
            "maxItems": st.integers(0, 3),
            "minProperties": st.integers(0, 3),
            "maxProperties": st.integers(0, 3),
            "required": st.lists(st.sampled_from("pqr"), unique=True, max_size=3),
            "description": st.text(max_size=5),
            "format": st.just("date-time"),
        },
    ),
)
SCHEMA = st.recursive(
    LEAF_SCHEMA,
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "type": TYPES,
            "properties": st.dictionaries(st.sampled_from("pqr"), inner, max_size=3),
            "additionalProperties": inner,
            "items": inner,
            "allOf": st.lists(inner, min_size=1, max_size=2),
            "anyOf": st.lists(inner, min_size=1, max_size=2),
            "oneOf": st.lists(inner, min_size=1, max_size=3),
            "not": inner,
            "required": st.lists(st.sampled_from("pqr"), unique=True, max_size=2),
        },
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=SCHEMA, instances=st.lists(JSON, min_size=1, max_size=12))
def test_compiled_schema_agrees_with_jsonschema_on_every_instance(schema, instances):
    Draft202012Validator.check_schema(schema)
    reference = Draft202012Validator(schema)
    check = compile_schema(schema)
    assert check is not None
    for instance in instances:
        assert check(instance) == reference.is_valid(instance), (schema, instance)


TICKETS = st.fixed_dictionaries(
    {},
    optional={
        "category": st.sampled_from(["bug", "billing", "other", "nope", 3]),
        "priority": st.sampled_from(["low", "urgent", "p0", None]),
        "summary": st.text(max_size=4) | st.integers(),
        "extra": st.booleans(),
    },
)
ITEMS = st.builds(
    ResultItem,
    custom_id=st.just("j1a1"),
    outcome=st.sampled_from(list(ResultOutcome)),
    status_code=st.sampled_from([200, None, 400, 429, 500]),
    stop_reason=st.sampled_from(
        ["stop", "length", "max_tokens", "refusal", "content_filter", "tool_use", None]
    ),
    text=st.one_of(
        st.none(),
        TICKETS.map(json.dumps),
        TICKETS.map(lambda t: json.dumps(t)[:-1]),  # cut short
        TICKETS.map(lambda t: f"Answer: {json.dumps(t)}"),
        st.text(max_size=20),
    ),
    tool_input=st.none() | TICKETS,
)


POLICIES = {"json": TRIAGE, "json_in_text": policy("json_in_text")}


@settings(max_examples=400, deadline=None, database=None)
@given(item=ITEMS, output_policy=st.sampled_from(sorted(POLICIES)))
def test_nothing_truncated_refused_non_200_unparsed_or_off_schema_is_ever_accepted(item, output_policy):
    processor = POLICIES[output_policy]
    verdict = validate_result(item, processor)
    if not verdict.accepted:
        assert verdict.output is None and verdict.errors and verdict.reason != "ok"
        return
    assert item.outcome is ResultOutcome.SUCCEEDED
    assert item.status_code in (200, None)
    assert item.stop_reason in ("stop", "tool_use", None)
    assert Draft202012Validator(TRIAGE.response_schema).is_valid(verdict.output)
    if output_policy == "json":
        expected = item.tool_input if item.tool_input is not None else json.loads(item.text)
        assert verdict.output == expected
    else:
        assert json.dumps(verdict.output) in item.text or verdict.output == json.loads(
            item.text.split(": ", 1)[-1]
        )
