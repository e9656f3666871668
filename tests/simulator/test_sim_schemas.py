"""Outputs satisfy the schema the request carries, however it carries it (validated with jsonschema)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_dagster.simulator.schemas import satisfying, schema_in_text

PYDANTIC_LIKE = {
    "$defs": {"Entity": {"type": "object", "properties": {"name": {"type": "string", "minLength": 2},
                                                          "kind": {"enum": ["person", "place", "thing"]}},
                         "required": ["name", "kind"], "additionalProperties": False}},
    "type": "object",
    "properties": {
        "entities": {"type": "array", "items": {"$ref": "#/$defs/Entity"}, "minItems": 1, "maxItems": 4},
        "summary": {"type": "string", "maxLength": 30},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "pages": {"type": "integer", "minimum": 1, "maximum": 9},
        "reviewed": {"type": "boolean"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "status": {"const": "final"},
        "score": {"oneOf": [{"type": "integer", "minimum": 90}, {"type": "string", "maxLength": 3}]},
        "missing": {"type": "null"},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}, "uniqueItems": True},
    },
    "required": ["entities", "summary", "confidence", "pages", "reviewed", "note", "status", "score"],
    "additionalProperties": False,
}


def test_openai_response_format_json_schema_output_validates(oai):
    for i in range(5):
        completion = oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"extract entities {i}"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": PYDANTIC_LIKE}})
        jsonschema.validate(json.loads(completion.choices[0].message.content), PYDANTIC_LIKE)


def test_anthropic_forced_tool_use_input_validates(claude):
    tool = {"name": "record_entities", "description": "record", "input_schema": PYDANTIC_LIKE}
    message = claude.messages.create(
        model="claude-haiku-4-5", max_tokens=1024, tools=[tool],
        tool_choice={"type": "tool", "name": "record_entities"},
        messages=[{"role": "user", "content": "extract entities"}])
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "record_entities"
    jsonschema.validate(block.input, PYDANTIC_LIKE)


def test_schema_in_a_fenced_prompt_block_is_honoured_by_both_providers(oai, claude):
    prompt = "Answer with JSON matching this schema:\n```json\n" + json.dumps(PYDANTIC_LIKE) + "\n```\n"
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": prompt}, {"role": "user", "content": "go"}])
    jsonschema.validate(json.loads(completion.choices[0].message.content), PYDANTIC_LIKE)
    message = claude.messages.create(model="claude-haiku-4-5", max_tokens=1024, system=prompt,
                                     messages=[{"role": "user", "content": "go"}])
    jsonschema.validate(json.loads(message.content[0].text), PYDANTIC_LIKE)


def test_anthropic_output_config_json_schema_output_validates(claude):
    message = claude.messages.create(
        model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": "extract"}],
        output_config={"format": {"type": "json_schema", "schema": PYDANTIC_LIKE}})
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), PYDANTIC_LIKE)


def test_openai_forced_function_call_arguments_validate(oai):
    tool = {"type": "function", "function": {"name": "record", "parameters": PYDANTIC_LIKE}}
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "extract"}], tools=[tool],
        tool_choice={"type": "function", "function": {"name": "record"}})
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    jsonschema.validate(json.loads(choice.message.tool_calls[0].function.arguments), PYDANTIC_LIKE)


def test_batch_lines_with_a_schema_validate(sim, oai, wait_for):
    rows = [{"custom_id": f"s-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"doc {i}"}],
                      "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                                                                                 "schema": PYDANTIC_LIKE}}}}
            for i in range(10)]
    uploaded = oai.files.create(file=("in.jsonl", "\n".join(json.dumps(r) for r in rows).encode()),
                                purpose="batch")
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    done = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status == "completed")
    for line in oai.files.content(done.output_file_id).text.splitlines():
        body = json.loads(line)["response"]["body"]
        jsonschema.validate(json.loads(body["choices"][0]["message"]["content"]), PYDANTIC_LIKE)


def test_schema_in_text_ignores_fenced_json_that_is_not_a_schema():
    text = "Example:\n```json\n[1, 2]\n```\nSchema:\n```json\n{\"type\": \"object\"}\n```"
    assert schema_in_text(text) == {"type": "object"}
    assert schema_in_text("no schema here") is None


_LEAF = st.one_of(
    st.builds(lambda lo, n: {"type": "string", "minLength": lo, "maxLength": lo + n},
              st.integers(0, 20), st.integers(0, 20)),
    st.builds(lambda lo, n: {"type": "integer", "minimum": lo, "maximum": lo + n},
              st.integers(-1000, 1000), st.integers(0, 50)),
    st.builds(lambda lo, n: {"type": "number", "minimum": lo, "maximum": lo + n},
              st.floats(-1e3, 1e3), st.floats(0, 10)),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=4, unique=True).map(lambda v: {"enum": v}),
    st.integers().map(lambda v: {"const": v}),
)


def _extend(children):
    objects = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=6), children, min_size=1, max_size=4).flatmap(
        lambda props: st.builds(
            lambda required, closed: {"type": "object", "properties": props, "required": required,
                                      "additionalProperties": not closed},
            st.lists(st.sampled_from(sorted(props)), unique=True), st.booleans()))
    arrays = st.builds(lambda items, lo, n: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + n},
                       children, st.integers(0, 3), st.integers(0, 3))
    unions = st.lists(children, min_size=1, max_size=3).map(lambda options: {"anyOf": options})
    nullable = children.filter(lambda s: isinstance(s.get("type"), str) and s["type"] != "null").map(
        lambda s: {**s, "type": [s["type"], "null"]})
    return st.one_of(objects, arrays, unions, nullable)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.recursive(_LEAF, _extend, max_leaves=12), key=st.integers(0, 10_000))
def test_generated_instances_satisfy_arbitrary_supported_schemas(schema, key):
    jsonschema.validate(satisfying(schema, key), schema)


@pytest.mark.parametrize("fmt", ["json", PYDANTIC_LIKE])
def test_ollama_format_is_honoured(olla, fmt):
    reply = olla.chat(model="llama3.2:3b", messages=[{"role": "user", "content": "extract"}], format=fmt)
    value = json.loads(reply.message.content)
    if isinstance(fmt, dict):
        jsonschema.validate(value, fmt)
    else:
        assert isinstance(value, dict)
