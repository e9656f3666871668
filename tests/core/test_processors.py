"""Processors: YAML loading refuses every broken definition with file and field named; examples render
requests in each provider's own body shape."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from forge_dagster.core.models import Provider
from forge_dagster.core.platform.catalog import (
    PACKAGE_PROCESSORS_DIR,
    default_processor_dirs,
    load_processor_file,
    load_processors,
)
from forge_dagster.core.platform.processors import Processor, ProcessorError, TemplateError, validate_input
from forge_dagster.core.providers.requests import TOOL_NAME, render_request

REPO_PROCESSORS = Path(__file__).resolve().parents[2] / "processors"

BASE = {
    "name": "demo",
    "version": "1.0.0",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "system": "You label things.",
    "template": "Label: {text}",
    "response_schema": {
        "type": "object",
        "required": ["label"],
        "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
    },
    "max_tokens": 100,
}


def write(directory: Path, name: str, data: dict | str) -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def make(**changes) -> Processor:
    return Processor.model_validate({**BASE, **changes})


# --- examples ---------------------------------------------------------------------------------------------


EXAMPLES = ["comment_moderation", "product_embeddings", "review_sentiment", "ticket_triage", "ticket_triage_responses"]


def test_packaged_examples_load_and_are_the_repo_copies():
    catalog = load_processors(PACKAGE_PROCESSORS_DIR)
    assert sorted(catalog) == EXAMPLES
    assert catalog["ticket_triage"].provider == Provider.OPENAI
    assert catalog["review_sentiment"].provider == Provider.ANTHROPIC
    assert {catalog[n].endpoint for n in EXAMPLES} == {"chat", "responses", "embeddings", "moderations"}
    for packaged in PACKAGE_PROCESSORS_DIR.glob("*.yaml"):
        assert (REPO_PROCESSORS / packaged.name).read_bytes() == packaged.read_bytes()


def test_repo_folder_next_to_packaged_examples_merges_identical_definitions():
    catalog = load_processors([PACKAGE_PROCESSORS_DIR, REPO_PROCESSORS])
    assert len(catalog.all()) == len(EXAMPLES)


def test_default_dirs_are_packaged_examples_then_env_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FORGE_PROCESSORS_DIR", raising=False)
    assert default_processor_dirs() == [PACKAGE_PROCESSORS_DIR]
    monkeypatch.setenv("FORGE_PROCESSORS_DIR", str(tmp_path))
    assert default_processor_dirs() == [PACKAGE_PROCESSORS_DIR, tmp_path]
    write(tmp_path, "extra.yaml", {**BASE, "name": "extra"})
    assert sorted(load_processors()) == sorted(["extra", *EXAMPLES])


def test_ticket_triage_renders_an_openai_json_schema_request():
    processor = load_processors(PACKAGE_PROCESSORS_DIR)["ticket_triage"]
    request = render_request(processor, {"subject": "Cannot log in", "body": "Error 500 since today."}, "j7a1")
    body = request.body
    assert request.custom_id == "j7a1"
    assert body["model"] == "gpt-4o-mini"
    assert body["max_tokens"] == processor.max_tokens
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == "Subject: Cannot log in\n\nError 500 since today.\n"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "ticket_triage", "schema": processor.response_schema, "strict": False},
    }
    assert "tools" not in body
    json.dumps(body)  # the body is plain JSON


def test_review_sentiment_renders_an_anthropic_forced_tool_request():
    processor = load_processors(PACKAGE_PROCESSORS_DIR)["review_sentiment"]
    body = render_request(processor, {"review": "Great battery.", "product": "X1", "rating": 5}, "j8a2").body
    assert body["model"] == "claude-3-5-haiku-latest"
    assert body["system"] == processor.system
    assert body["messages"] == [
        {"role": "user", "content": "Product: X1\nStar rating: 5/5\nReview:\nGreat battery.\n"}
    ]
    assert body["tools"] == [
        {"name": TOOL_NAME, "description": processor.description, "input_schema": processor.response_schema}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert "response_format" not in body
    optional_left_out = render_request(processor, {"review": "Meh."}, "j8a3").body["messages"][0]["content"]
    assert optional_left_out == "Review:\nMeh.\n"


def test_rendering_is_deterministic_so_a_batch_can_be_rebuilt_identically():
    processor = load_processors(PACKAGE_PROCESSORS_DIR)["ticket_triage"]
    job_input = {"subject": "s", "body": "b"}
    first = json.dumps(render_request(processor, job_input, "j1a1").body, sort_keys=True)
    assert json.dumps(render_request(processor, job_input, "j1a1").body, sort_keys=True) == first


# --- output policies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_json_in_text_puts_the_schema_in_the_system_prompt_and_asks_no_structured_output(provider):
    body = render_request(make(provider=provider, output_policy="json_in_text"), {"text": "x"}, "j1a1").body
    system = body["system"] if provider == "anthropic" else body["messages"][0]["content"]
    assert system.startswith("You label things.")
    fenced = system.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(fenced) == BASE["response_schema"]
    assert not {"response_format", "tools", "tool_choice"} & body.keys()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_text_policy_requests_plain_text(provider):
    body = render_request(make(provider=provider, output_policy="text", response_schema=None), {"text": "x"}, "j1a1")
    assert not {"response_format", "tools", "tool_choice"} & body.body.keys()


def test_temperature_is_sent_only_when_set():
    assert "temperature" not in render_request(make(), {"text": "x"}, "j1a1").body
    assert render_request(make(temperature=0.2), {"text": "x"}, "j1a1").body["temperature"] == 0.2


# --- templates --------------------------------------------------------------------------------------------


def test_simple_template_fills_fields_encodes_values_and_keeps_other_braces():
    processor = make(template='Ticket {ticket.id} {tags} {"literal": true} {text}')
    content = render_request(processor, {"ticket": {"id": 7}, "tags": ["a", "b"], "text": "hi"}, "j1a1")
    assert content.body["messages"][-1]["content"] == 'Ticket 7 ["a", "b"] {"literal": true} hi'


@pytest.mark.parametrize(
    ("template", "job_input", "field"),
    [
        ("Label: {text}", {"other": 1}, "text"),
        ("Label: {ticket.body}", {"ticket": {"id": 1}}, "ticket.body"),
        ("Label: {{ text }}", {}, "text"),
        ("{% for t in items %}{{ t }}{% endfor %}", {}, "items"),
    ],
)
def test_missing_template_field_raises_template_error_naming_it(template, job_input, field):
    processor = make(template=template)
    with pytest.raises(TemplateError) as caught:
        render_request(processor, job_input, "j1a1")
    assert caught.value.field == field
    assert field in str(caught.value)
    assert any(field in problem for problem in validate_input(processor, job_input))


def test_validate_input_accepts_a_fitting_input_and_refuses_non_objects():
    processor = make()
    assert validate_input(processor, {"text": "x"}) == []
    assert validate_input(processor, ["text"]) == ["job input must be a JSON object, got list"]
    with pytest.raises(TemplateError):
        render_request(processor, "text", "j1a1")  # type: ignore[arg-type]


def test_jinja_templates_run_sandboxed():
    processor = make(template="{{ text.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError):
        render_request(processor, {"text": "x"}, "j1a1")


def test_jinja_guarded_optional_fields_are_not_required():
    processor = make(template="{% if extra is defined %}{{ extra }} {% endif %}{{ text }}")
    assert validate_input(processor, {"text": "x"}) == []
    assert (
        render_request(processor, {"text": "x", "extra": "y"}, "j1a1").body["messages"][-1]["content"] == "y x"
    )


def test_render_request_refuses_a_custom_id_providers_would_reject():
    with pytest.raises(ValueError, match="custom_id"):
        render_request(make(), {"text": "x"}, "job 1/attempt 1")


# --- loading refuses broken definitions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"max_tokens": "300"}, "max_tokens", "integer"),
        ({"max_tokens": 0}, "max_tokens", "greater than 0"),
        ({"provider": "mistral"}, "provider", "openai"),
        ({"version": 1.0}, "version", "string"),
        ({"version": "v1"}, "version", "semver"),
        ({"response_schema": {"type": "objekt"}}, "response_schema", "not a valid JSON Schema"),
        ({"response_schema": {"type": "object", "required": "label"}}, "response_schema", "required"),
        ({"template": "{% if text %}unclosed"}, "template", "does not compile"),
        ({"mode": "sometimes"}, "mode", "batch"),
        ({"output_policy": "yaml"}, "output_policy", "json"),
        ({"unexpected": 1}, "unexpected", "Extra inputs"),
        ({"temperature": "hot"}, "temperature", "number"),
        ({"name": "has space"}, "name", "pattern"),
    ],
)
def test_loading_refuses_a_bad_field_naming_file_and_field(tmp_path, changes, field, words):
    path = write(tmp_path, "broken.yaml", {**BASE, **changes})
    with pytest.raises(ProcessorError) as caught:
        load_processor_file(path)
    message = str(caught.value)
    assert str(path) in message and field in message and words in message
    assert caught.value.field == field and caught.value.path == str(path)


@pytest.mark.parametrize("missing", ["name", "version", "provider", "model", "template", "max_tokens"])
def test_loading_refuses_a_missing_required_field(tmp_path, missing):
    path = write(tmp_path, "partial.yaml", {k: v for k, v in BASE.items() if k != missing})
    with pytest.raises(ProcessorError, match=rf"partial\.yaml: {missing}: required field is missing"):
        load_processor_file(path)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"response_schema": None}, "response_schema is required when output_policy is json"),
        ({"response_schema": {"type": "array"}}, "response_schema must have type: object"),
        ({"provider": "anthropic", "temperature": 1.5}, "between 0 and 1 for anthropic"),
    ],
)
def test_loading_refuses_inconsistent_definitions(tmp_path, changes, words):
    path = write(tmp_path, "inconsistent.yaml", {**BASE, **changes})
    with pytest.raises(ProcessorError, match="inconsistent.yaml") as caught:
        load_processor_file(path)
    assert words in str(caught.value)


def test_loading_refuses_invalid_yaml_and_non_mapping_documents(tmp_path):
    bad = write(tmp_path, "bad.yaml", "name: demo\n  version: [1.0.0\n")
    with pytest.raises(ProcessorError, match=r"bad\.yaml: \(yaml\): invalid YAML"):
        load_processor_file(bad)
    listing = write(tmp_path, "list.yaml", "- name: demo\n")
    with pytest.raises(ProcessorError, match=r"list\.yaml: \(processor\): must be a YAML mapping"):
        load_processor_file(listing)


def test_loading_a_directory_refuses_a_duplicate_name_and_version(tmp_path):
    write(tmp_path, "a.yaml", BASE)
    write(tmp_path, "b.yaml", BASE)
    with pytest.raises(
        ProcessorError, match=r"b\.yaml: version: duplicate demo 1\.0\.0 \(also defined in .*a\.yaml\)"
    ):
        load_processors(tmp_path)


def test_a_conflicting_redefinition_in_another_directory_is_refused(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write(tmp_path / "one", "demo.yaml", BASE)
    write(tmp_path / "two", "demo.yaml", {**BASE, "model": "gpt-4o"})
    with pytest.raises(ProcessorError, match="duplicate demo 1.0.0"):
        load_processors([tmp_path / "one", tmp_path / "two"])


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ProcessorError, match="does not exist"):
        load_processors(tmp_path / "nowhere")


# --- catalog ----------------------------------------------------------------------------------------------


def test_catalog_resolves_latest_by_semver_and_exact_versions(tmp_path):
    for version in ("1.9.0", "1.10.0", "1.10.0-rc.1", "0.1.0"):
        write(tmp_path, f"demo-{version}.yml", {**BASE, "version": version, "max_tokens": 10})
    catalog = load_processors(tmp_path)
    assert catalog["demo"].version == "1.10.0"
    assert catalog.get_version("demo", "1.9.0").version == "1.9.0"
    assert catalog[("demo", "0.1.0")].version == "0.1.0"
    assert catalog.versions("demo") == ["0.1.0", "1.9.0", "1.10.0-rc.1", "1.10.0"]
    assert ("demo", "2.0.0") not in catalog and "demo" in catalog
    with pytest.raises(KeyError, match="unknown processor"):
        catalog.get_version("demo", "2.0.0")
    with pytest.raises(KeyError):
        catalog["nothing"]


def test_fingerprint_changes_with_the_definition_and_only_then():
    assert make().fingerprint == make().fingerprint
    assert make().fingerprint != make(response_schema={"type": "object"}).fingerprint


def test_processor_files_may_carry_comments_and_take_defaults(tmp_path):
    text = textwrap.dedent(
        """\
        # comment
        name: commented
        version: "0.1.0"
        provider: anthropic
        model: claude-3-5-haiku-latest
        template: "{text}"
        output_policy: text
        max_tokens: 5
        """
    )
    processor = load_processor_file(write(tmp_path, "commented.yaml", text))
    assert processor.output_policy == "text" and processor.max_attempts == 3 and processor.mode == "batch"
