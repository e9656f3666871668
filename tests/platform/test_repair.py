"""The repair loop: a rejected answer is asked again with the validator's errors, at most
`max_repair_attempts` times, through the real batch path against the simulator."""

from __future__ import annotations

import json

import openai
import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import ResultItem, ResultOutcome
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.platform.repair import render_job_request, repair_for
from forge_dagster.core.platform.validation import schema_errors
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.store import JobSpec
from tests.helpers import make_due, run_batch_round
from tests.platform.conftest import example, ticket_input, write_processor


def strict_triage(repairs: int) -> dict:
    return {**example("ticket_triage"), "name": f"triage_r{repairs}", "max_repair_attempts": repairs}


@pytest.fixture
def catalog_with(store, tmp_path):
    def load(*definitions: dict):
        folder = tmp_path / "processors"
        for definition in definitions:
            write_processor(folder, definition)
        return load_catalog(store, [PACKAGE_PROCESSORS_DIR, folder])

    return load


def enqueue(store, name: str, n: int, max_attempts: int = 5) -> list[int]:
    specs = [JobSpec(name, ticket_input(i), processor_version="1.0.0", max_attempts=max_attempts) for i in range(n)]
    return submit_jobs(store, specs).accepted


def uploaded_bodies(ports, store, batch_id: int) -> dict[str, dict]:
    """The request bodies the provider received for a batch, by custom_id (read back from its input file)."""
    creds = ports["openai"].credentials
    client = openai.OpenAI(api_key=creds.get_secret_value(), base_url=creds.base_url)
    text = client.files.content(store.batches.get(batch_id)["input_file_id"]).text
    return {line["custom_id"]: line["body"] for line in map(json.loads, text.splitlines())}


def test_repair_request_quotes_the_rejected_answer_and_every_validator_error(store, catalog_with, ports, sim,
                                                                            monkeypatch):
    monkeypatch.setenv("FORGE_PROVIDER_FILE_RETENTION_S", "3600")  # keep the uploaded file to read it back
    catalog = catalog_with(strict_triage(2))
    processor = catalog["triage_r2"]
    [job_id] = enqueue(store, "triage_r2", 1)
    sim.configure(schema_violation_rate=1.0)
    run_batch_round(store, catalog, ports)
    first = store.jobs.get(job_id)
    assert first["state"] == "pending" and first["reason"].startswith("schema")

    sim.configure(schema_violation_rate=0.0)
    make_due(store)
    [batch_id] = run_batch_round(store, catalog, ports)
    body = uploaded_bodies(ports, store, batch_id)[f"j{job_id}a2"]
    original = render_request(processor, ticket_input(0), f"j{job_id}a2").body
    assert body["messages"][:2] == original["messages"]  # the processor's own request, then the repair
    assistant, repair = body["messages"][2:]
    assert assistant["role"] == "assistant" and repair["role"] == "user"
    rejected = json.loads(assistant["content"])
    assert rejected == json.loads(first["raw_output"])
    errors = schema_errors(processor, rejected)
    assert errors and all(f"- {e}" in repair["content"] for e in errors)
    assert body["response_format"] == original["response_format"]  # structured output is still asked for

    done = store.jobs.get(job_id)
    assert (done["state"], done["attempt"]) == ("succeeded", 2)


def test_the_repair_loop_stops_at_its_bound_even_with_attempts_left(store, catalog_with, ports, sim):
    catalog = catalog_with(strict_triage(1), strict_triage(0))
    bounded = enqueue(store, "triage_r1", 3, max_attempts=5)
    none_allowed = enqueue(store, "triage_r0", 2, max_attempts=5)
    sim.configure(schema_violation_rate=1.0)
    for _ in range(4):  # more rounds than the bound needs: nothing runs past it
        run_batch_round(store, catalog, ports)
        make_due(store)
    for job_id in bounded:
        job = store.jobs.get(job_id)
        assert (job["state"], job["attempt"]) == ("invalid", 2)  # the first answer and one repair
        assert job["reason"].startswith("repair attempts (1) exhausted; last: schema")
        assert job["output"] is None and job["raw_output"]
    for job_id in none_allowed:
        job = store.jobs.get(job_id)
        assert (job["state"], job["attempt"]) == ("invalid", 1)
        assert job["reason"].startswith("repair attempts (0) exhausted")
    assert store.jobs.counts() == {"invalid": 5}


def _item(text=None, *, stop="stop", tool_input=None, outcome=ResultOutcome.SUCCEEDED) -> ResultItem:
    return ResultItem("j1a1", outcome, status_code=200, text=text, tool_input=tool_input, stop_reason=stop)


def test_a_truncated_answer_is_not_quoted_and_the_model_is_asked_to_fit_the_limit():
    processor = Processor.model_validate(example("ticket_triage"))
    repair = repair_for(processor, _item('{"category": "bug", "prio', stop="length"), 1)
    assert repair.truncated and repair.previous_output is None
    body = render_job_request(processor, ticket_input(1), "j1a2", repair).body
    assert [m["role"] for m in body["messages"]] == ["system", "user"]  # roles still alternate
    assert "cut off at the 300-token limit" in body["messages"][-1]["content"]
    assert body["messages"][-1]["content"].startswith("Subject: Ticket 1")


def test_an_anthropic_repair_quotes_the_tool_input_and_keeps_the_forced_tool():
    processor = Processor.model_validate(example("review_sentiment"))
    bad = {"sentiment": "ecstatic", "score": 3, "aspects": []}
    repair = repair_for(processor, _item("", stop="tool_use", tool_input=bad), 1)
    body = render_job_request(processor, {"review": "Great."}, "j1a2", repair).body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert json.loads(body["messages"][1]["content"]) == bad
    assert "$.score: 3 is greater than the maximum of 1" in body["messages"][2]["content"]
    assert body["tool_choice"]["type"] == "tool"


@pytest.mark.parametrize("item", [
    _item(json.dumps({"category": "bug", "priority": "low", "summary": "ok"})),  # accepted: nothing to repair
    _item("I cannot help with that.", stop="refusal"),  # a refusal is final
    _item(None, outcome=ResultOutcome.REQUEUE),  # never answered
])
def test_only_a_rejected_answer_that_a_retry_could_fix_gets_a_repair(item):
    assert repair_for(Processor.model_validate(example("ticket_triage")), item, 1) is None
