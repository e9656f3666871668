"""Bad provider output and bad processor definitions, generated.

Result lines: every shape a provider (or a proxy, or a truncated file) might send goes through the
normalisation and the validator without raising: a line naming a custom_id becomes that custom_id's
item (an error the validator rejects, or an answer it judges), and only a complete, schema-valid answer
is accepted. One poisoned line must not take its batch's good lines down with it.
Processor YAML: an invalid schema, template or field is refused with the file and the field named.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_dagster.core.models import ResultOutcome
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR, load_processor_file, load_processors
from forge_dagster.core.platform.processors import ProcessorError
from forge_dagster.core.platform.validation import validate_result
from forge_dagster.core.providers.results import anthropic_batch_item, match_results, openai_batch_item

pytestmark = pytest.mark.chaos

CATALOG = load_processors()
TICKET, REVIEW = CATALOG["ticket_triage"], CATALOG["review_sentiment"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)

GOOD_TICKET = {"category": "bug", "priority": "high", "summary": "Export fails."}
OPENAI_LINE = {"id": "batch_req_1", "custom_id": "job-1-1", "error": None, "response": {
    "status_code": 200, "request_id": "req_1", "body": {
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": json.dumps(GOOD_TICKET), "refusal": None, "tool_calls": None}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}}}}}
ANTHROPIC_LINE = {"custom_id": "job-1-1", "result": {"type": "succeeded", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
    "content": [{"type": "text", "text": "Here it is."},
                {"type": "tool_use", "id": "tu", "name": "emit_result",
                 "input": {"sentiment": "positive", "score": 0.9, "aspects": ["battery"]}}],
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 0,
              "cache_creation_input_tokens": 0}}}}


def _paths(value, prefix=()):
    """Every path into a JSON value below its root."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _replaced(line: dict, path: tuple, new) -> dict:
    line = copy.deepcopy(line)
    target = line
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return line


@st.composite
def result_lines(draw):
    """(provider, line): a well-formed result line with one part replaced by any JSON value."""
    provider, base = draw(st.sampled_from([("openai", OPENAI_LINE), ("anthropic", ANTHROPIC_LINE)]))
    path = draw(st.sampled_from([p for p in _paths(base) if p != ("custom_id",)]))
    return provider, _replaced(base, path, draw(json_values))


def _judge(provider: str, line: dict):
    parse, processor = (openai_batch_item, TICKET) if provider == "openai" else (anthropic_batch_item, REVIEW)
    item = parse(line)
    assert item is not None and item.custom_id == line["custom_id"]
    return item, validate_result(item, processor), processor


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(result_lines())
def test_any_malformed_result_line_becomes_its_own_item_and_only_a_valid_answer_is_accepted(case):
    provider, line = case
    item, verdict, processor = _judge(provider, line)
    if verdict.accepted:
        assert item.outcome == ResultOutcome.SUCCEEDED and item.status_code == 200
        assert item.stop_reason not in ("length", "refusal")
        assert not list(processor.schema_validator.iter_errors(verdict.output))
    else:
        assert verdict.reason.strip()


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(result_lines(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_a_batch_of_good_and_poisoned_lines_keeps_every_good_line_matched_by_custom_id(cases, rnd):
    lines, expected = [], []
    for n, (provider, line) in enumerate(cases):
        if provider != "openai":
            continue
        bad = {**line, "custom_id": f"bad-{n}"}
        good = {**copy.deepcopy(OPENAI_LINE), "custom_id": f"good-{n}"}
        lines += [bad, good, {**good, "custom_id": "never-sent"}]
        expected += [f"bad-{n}", f"good-{n}"]
    rnd.shuffle(lines)
    items = match_results(expected + ["missing"], [openai_batch_item(x) for x in lines], provider_batch_id="b")
    assert [i.custom_id for i in items] == expected + ["missing"]
    for item in items:  # a poisoned line may still hold a good answer; a good line always does
        if item.custom_id.startswith("good-"):
            assert validate_result(item, TICKET).accepted
    assert items[-1].outcome == ResultOutcome.REQUEUE


# -- processor YAML --------------------------------------------------------------------------------
BASE_YAML = yaml.safe_load((PACKAGE_PROCESSORS_DIR / "ticket_triage.yaml").read_text(encoding="utf-8"))

BAD_FIELDS = {
    "response_schema": [{"type": "objekt"}, {"type": "object", "required": "category"},
                        {"type": "object", "properties": []}, {"type": "object", "minProperties": -1},
                        {"type": "string"}, "not a schema", 5],
    "template": ["{% if subject %}unclosed", "{{ subject ", "{% for x in %}{% endfor %}", "{{ subject | }}", ""],
    "provider": ["azure", 7, None],
    "model": ["", None, ["gpt"]],
    "version": ["1.0", "v1", 1.0, "one"],
    "name": ["", "has space", "semi;colon", "x" * 65, None],
    "max_tokens": [-1, 0, "many", 1.5],
    "temperature": [-0.1, 2.5, "hot"],
    "output_policy": ["yaml", None],
    "max_attempts": [0, 21, "3"],
    "tags": [["has space"], "not-a-list", [1]],
    "unknown_field": ["anything"],
}


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([(f, v) for f, values in BAD_FIELDS.items() for v in values]))
def test_processor_yaml_with_an_invalid_field_is_refused_naming_the_file_and_the_field(tmp_path_factory, bad):
    field, value = bad
    path = tmp_path_factory.mktemp("processors") / "broken.yaml"
    path.write_text(yaml.safe_dump({**BASE_YAML, field: value}), encoding="utf-8")
    with pytest.raises(ProcessorError) as refused:
        load_processor_file(path)
    message = str(refused.value)
    assert str(path) in message and field in message, message


@pytest.mark.parametrize("text", ["name: [unclosed", "- just\n- a list", "", "\x00binary", "name: a\n\tbad: indent"])
def test_processor_file_that_is_not_a_yaml_mapping_is_refused_naming_the_file(tmp_path, text):
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProcessorError) as refused:
        load_processors(tmp_path)
    assert str(path) in str(refused.value)
