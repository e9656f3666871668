"""The processor registry: YAML seeds PostgreSQL, status rules hold, jobs keep their pinned version."""

from __future__ import annotations

import json

import psycopg
import pytest

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.intake.routing import processor_check, submit_jobs
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR, load_processors
from forge_dagster.core.platform.processors import ProcessorError
from forge_dagster.core.platform.registry import (
    RegistryError,
    load_catalog,
    promote,
    retire,
    sync_processors,
)
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.store import JobSpec
from tests.platform.conftest import example, ticket_input, write_processor

V2_SYSTEM = "You triage tickets. Version two: be brief."


@pytest.fixture
def dirs(tmp_path):
    """The packaged examples plus a folder holding ticket_triage 1.1.0 (new model and system prompt)."""
    extra = tmp_path / "processors"
    write_processor(extra, example("ticket_triage"), version="1.1.0", model="gpt-4.1-mini", system=V2_SYSTEM,
                    tags=["support", "v2"])
    return [PACKAGE_PROCESSORS_DIR, extra]


def statuses(store) -> dict[tuple[str, str], str]:
    return {(r["name"], r["version"]): r["status"] for r in store.processors.list()}


def test_first_version_of_a_name_arrives_active_and_later_versions_as_drafts(store, dirs):
    report = sync_processors(store, dirs)
    assert sorted(report.registered) == [("comment_moderation", "1.0.0", "active"),
                                         ("product_embeddings", "1.0.0", "active"),
                                         ("review_sentiment", "1.0.0", "active"),
                                         ("ticket_triage", "1.0.0", "draft"), ("ticket_triage", "1.1.0", "active"),
                                         ("ticket_triage_responses", "1.0.0", "active")]
    # A new name's newest version is the one that starts active; syncing again changes nothing.
    again = sync_processors(store, dirs)
    assert again.registered == [] and again.unchanged == 6


def test_a_version_added_later_is_a_draft_until_promoted(store, dirs):
    sync_processors(store, [PACKAGE_PROCESSORS_DIR])
    sync_processors(store, dirs)
    assert statuses(store)[("ticket_triage", "1.1.0")] == "draft"
    catalog = load_catalog(store, dirs)
    assert catalog["ticket_triage"].version == "1.0.0"  # the active one, not the newest
    assert catalog.get_version("ticket_triage", "1.1.0").tags == ("support", "v2")

    assert promote(store, "ticket_triage", "1.1.0") == "1.0.0"
    assert {k: v for k, v in statuses(store).items() if k[0] in ("review_sentiment", "ticket_triage")} == {
        ("review_sentiment", "1.0.0"): "active", ("ticket_triage", "1.0.0"): "retired",
        ("ticket_triage", "1.1.0"): "active"}
    history = [(e["version"], e["from_status"], e["to_status"]) for e in store.processors.events("ticket_triage")]
    assert history == [("1.0.0", None, "active"), ("1.1.0", None, "draft"), ("1.0.0", "active", "retired"),
                       ("1.1.0", "draft", "active")]


def test_promotion_rules_refuse_what_is_not_draft_to_active(store, dirs):
    sync_processors(store, [PACKAGE_PROCESSORS_DIR])
    sync_processors(store, dirs)
    with pytest.raises(RegistryError, match="already active"):
        promote(store, "ticket_triage", "1.0.0")
    with pytest.raises(RegistryError, match="not registered"):
        promote(store, "ticket_triage", "9.9.9")
    promote(store, "ticket_triage", "1.1.0")
    with pytest.raises(RegistryError, match="retired and stays retired"):
        promote(store, "ticket_triage", "1.0.0")
    with pytest.raises(RegistryError, match="already retired"):
        retire(store, "ticket_triage", "1.0.0")
    assert retire(store, "ticket_triage") == "1.1.0"  # default: the active version
    with pytest.raises(RegistryError, match="no active version"):
        retire(store, "ticket_triage")
    assert "ticket_triage" not in load_catalog(store, dirs)


def test_the_database_itself_keeps_one_active_version_and_forward_only_status(store, dirs, database_url, schema):
    sync_processors(store, dirs)
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE processors SET status = 'active' WHERE name = 'ticket_triage' AND version = '1.0.0'")
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        conn.execute("UPDATE processors SET status = 'retired' WHERE name = 'ticket_triage' AND version = '1.0.0'")
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="retired -> draft is not allowed"):
            conn.execute("UPDATE processors SET status = 'draft' WHERE version = '1.0.0' AND name = 'ticket_triage'")
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="never changes"):
            conn.execute("UPDATE processors SET definition = json_build_object('name', name)")


def test_a_registered_processor_sends_byte_for_byte_the_request_its_yaml_defines(store):
    sync_processors(store, [PACKAGE_PROCESSORS_DIR])
    registry = load_catalog(store, [PACKAGE_PROCESSORS_DIR], sync=False)
    from_yaml = load_processors(PACKAGE_PROCESSORS_DIR)
    inputs = {"ticket_triage": ticket_input(1), "review_sentiment": {"review": "Good.", "rating": 4}}
    for name, job_input in inputs.items():
        sent = render_request(registry[name], job_input, "j1a1").body
        assert json.dumps(sent) == json.dumps(render_request(from_yaml[name], job_input, "j1a1").body)
        assert registry[name].fingerprint == from_yaml[name].fingerprint


def test_a_changed_definition_under_a_registered_version_is_a_conflict_and_the_registry_wins(store, tmp_path):
    sync_processors(store, [PACKAGE_PROCESSORS_DIR])
    changed = tmp_path / "changed"
    write_processor(changed, example("ticket_triage"), max_tokens=999)
    report = sync_processors(store, [changed])
    assert report.registered == [] and len(report.conflicts) == 1
    assert "ticket_triage 1.0.0" in report.conflicts[0] and "new version" in report.conflicts[0]
    assert load_catalog(store, [changed], sync=False)["ticket_triage"].max_tokens == 300


def test_an_invalid_response_schema_is_refused_when_syncing_naming_the_file_and_field(store, tmp_path):
    bad = tmp_path / "bad"
    path = write_processor(bad, example("ticket_triage"), name="bad_schema",
                           response_schema={"type": "object", "properties": {"x": {"type": "strng"}}})
    with pytest.raises(ProcessorError, match="response_schema: not a valid JSON Schema") as caught:
        sync_processors(store, [bad])
    assert str(path) in str(caught.value)
    assert store.processors.list() == []


def test_new_jobs_pin_the_active_version_may_name_a_draft_and_never_a_retired_one(store, dirs):
    sync_processors(store, [PACKAGE_PROCESSORS_DIR])
    sync_processors(store, dirs)
    check = processor_check(load_catalog(store, dirs))
    assert check("ticket_triage", None, ticket_input(1)) == ("1.0.0", "batch")
    assert check("ticket_triage", "1.1.0", ticket_input(1)) == ("1.1.0", "batch")  # trying a draft
    promote(store, "ticket_triage", "1.1.0")
    check = processor_check(load_catalog(store, dirs))
    assert check("ticket_triage", None, ticket_input(1)) == ("1.1.0", "batch")
    with pytest.raises(ValueError, match="ticket_triage 1.0.0 is retired; new jobs use 1.1.0"):
        check("ticket_triage", "1.0.0", ticket_input(1))
    retire(store, "ticket_triage")
    with pytest.raises(ValueError, match="has no active version"):
        processor_check(load_catalog(store, dirs))("ticket_triage", None, ticket_input(1))


def test_a_job_keeps_its_pinned_version_after_promotion(store, dirs, ports, sim):
    sync_processors(store, [PACKAGE_PROCESSORS_DIR])
    catalog = load_catalog(store, dirs)
    version, _ = processor_check(catalog)("ticket_triage", None, ticket_input(1))
    [old_job] = submit_jobs(store, [JobSpec("ticket_triage", ticket_input(1), processor_version=version)]).accepted

    promote(store, "ticket_triage", "1.1.0")
    catalog = load_catalog(store, dirs)
    version, _ = processor_check(catalog)("ticket_triage", None, ticket_input(2))
    [new_job] = submit_jobs(store, [JobSpec("ticket_triage", ticket_input(2), processor_version=version)]).accepted

    sim.configure(batch_processing_s=1000)  # keep the batches open: what was submitted is what we read
    report = build_and_submit(store, catalog, ports)
    assert len(report.batches) == 2
    batches = {store.jobs.get(j)["batch_id"]: j for j in (old_job, new_job)}
    by_job = {batches[b]: store.batches.get(b) for b in batches}
    assert (by_job[old_job]["processor_version"], by_job[old_job]["model"]) == ("1.0.0", "gpt-4o-mini")
    assert (by_job[new_job]["processor_version"], by_job[new_job]["model"]) == ("1.1.0", "gpt-4.1-mini")
    old_body = _submitted_body(ports, by_job[old_job])
    assert old_body["model"] == "gpt-4o-mini" and V2_SYSTEM not in old_body["messages"][0]["content"]
    assert V2_SYSTEM in _submitted_body(ports, by_job[new_job])["messages"][0]["content"]


def _submitted_body(ports, batch) -> dict:
    """The request body the provider received, read back from the uploaded batch input file."""
    import openai

    creds = ports["openai"].credentials
    client = openai.OpenAI(api_key=creds.get_secret_value(), base_url=creds.base_url)
    [line] = client.files.content(batch["input_file_id"]).text.splitlines()
    return json.loads(line)["body"]
