"""Provider storage: OpenAI files deleted only once their lines are stored (and a crash between delete and
record loses nothing), unused uploads swept, `output_expires_after` honoured, Anthropic results forgotten
after their retention, batches at risk reported, collected Anthropic batches pruned."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest
from openai.types import FileObject

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.batch.provider_storage import (
    forget_collected_batches,
    release_batch_files,
    results_at_risk,
    sweep_unused_uploads,
)
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import JobSpec


@pytest.fixture
def oai(sim):
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test-openai-0123456789abcdef", max_retries=0)
    yield client
    client.close()


def _files(oai, batch_row) -> list[str]:
    remote = oai.batches.retrieve(batch_row["provider_batch_id"])
    return [f for f in (remote.input_file_id, remote.output_file_id, remote.error_file_id) if f]


def _gone(oai, file_id: str) -> bool:
    try:
        oai.files.retrieve(file_id)
    except openai.NotFoundError:
        return True
    return False


def _stamp(store, batch_id: int, column: str):
    with store.transaction() as conn:
        return conn.execute(f"SELECT {column} FROM batches WHERE id = %s", (batch_id,)).fetchone()[0]


def _ended_batch(store, catalog, ports, processor: str = "ticket_triage", n: int = 3) -> dict:
    submit_jobs(store, [JobSpec(processor, {"subject": f"T{i}", "body": "Export fails.", "review": f"R{i}"},
                                processor_version="1.0.0") for i in range(n)])
    build_and_submit(store, catalog, ports)
    [batch_id] = poll_open_batches(store, ports).ended
    return store.batches.get(batch_id)


def test_a_batchs_files_are_deleted_only_after_its_lines_are_stored(store, catalog, ports, oai):
    batch = _ended_batch(store, catalog, ports)
    files = _files(oai, batch)
    assert len(files) == 2  # input and output
    assert release_batch_files(store, ports).released == {}  # ended, but no line stored yet
    assert not any(_gone(oai, f) for f in files)

    collect_results(store, ports, batch["id"])
    assert all(_gone(oai, f) for f in files)
    assert _stamp(store, batch["id"], "files_released_at") is not None
    validate_batch(store, catalog, batch["id"])
    assert store.jobs.counts() == {"succeeded": 3}


def test_a_crash_between_delete_and_record_loses_nothing_forge_needs(store, catalog, ports, oai):
    batch = _ended_batch(store, catalog, ports)
    files = _files(oai, batch)
    collect_results(store, ports, batch["id"])  # lines stored, then the files deleted...
    with store.transaction() as conn:  # ...and the record of it lost in a crash
        conn.execute("UPDATE batches SET files_released_at = NULL WHERE id = %s", (batch["id"],))
    assert all(_gone(oai, f) for f in files)

    # The restarted pipeline collects and validates from the stored lines, and releases the batch again.
    assert collect_results(store, ports, batch["id"]).stored_now == 0
    validate_batch(store, catalog, batch["id"])
    assert store.jobs.counts() == {"succeeded": 3}
    again = release_batch_files(store, ports)
    assert again.released == {batch["id"]: files} and not again.errors  # gone already counts as deleted
    assert _stamp(store, batch["id"], "files_released_at") is not None


def test_an_upload_no_batch_was_created_from_is_swept_after_the_grace_period(store, catalog, ports, oai):
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", ' \
           b'"messages": [{"role": "user", "content": "hi"}]}}\n'
    orphan = oai.files.create(file=("forge-fb_orphan.jsonl", line, "application/jsonl"), purpose="batch").id
    foreign = oai.files.create(file=("theirs.jsonl", line, "application/jsonl"), purpose="batch").id
    submit_jobs(store, [JobSpec("ticket_triage", {"subject": "s", "body": "b"}, processor_version="1.0.0")])
    build_and_submit(store, catalog, ports)  # in flight: its upload is Forge's and in use
    used = store.batches.get(poll_open_batches(store, ports).ended[0])["input_file_id"]

    assert sweep_unused_uploads(store, ports).unused_uploads == []  # within the grace period
    swept = sweep_unused_uploads(store, ports, now=time.time() + 2 * 86_400)
    assert swept.unused_uploads == [orphan]
    assert _gone(oai, orphan) and not _gone(oai, foreign) and not _gone(oai, used)


def test_the_simulator_honours_output_expires_after(sim, oai):
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", ' \
           b'"messages": [{"role": "user", "content": "hi"}]}}\n'
    upload = oai.files.create(file=("in.jsonl", line, "application/jsonl"), purpose="batch")
    batch = oai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                               output_expires_after={"anchor": "created_at", "seconds": 3600})
    ended = oai.batches.retrieve(batch.id)
    output = FileObject.model_validate(oai.files.with_raw_response.retrieve(ended.output_file_id).http_response.json(),
                                       strict=True)
    assert output.expires_at == output.created_at + 3600
    assert oai.files.content(output.id).text
    sim.configure(clock_offset_s=3601)
    assert _gone(oai, output.id) and not _gone(oai, upload.id)  # the input file has no expiry
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                           output_expires_after={"anchor": "created_at", "seconds": 60})


def test_anthropic_results_are_forgotten_after_their_retention_and_batches_at_risk_are_reported(
        store, catalog, ports, sim):
    batch = _ended_batch(store, catalog, ports, processor="review_sentiment", n=2)
    assert results_at_risk(store, 3) == []
    with store.transaction() as conn:  # submitted 27 days ago, still not collected
        conn.execute("UPDATE batches SET submitted_at = now() - interval '27 days' WHERE id = %s", (batch["id"],))
    assert [r["id"] for r in results_at_risk(store, 3)] == [batch["id"]]

    client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="sk-ant-test-0123456789abcdef",
                                 max_retries=0)
    sim.configure(anthropic_results_retention_s=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch["provider_batch_id"])


def test_collected_anthropic_batches_are_deleted_at_the_provider_when_old_enough(store, catalog, ports, sim):
    batch = _ended_batch(store, catalog, ports, processor="review_sentiment", n=2)
    collect_results(store, ports, batch["id"])
    validate_batch(store, catalog, batch["id"])
    assert store.jobs.counts() == {"succeeded": 2}
    assert forget_collected_batches(store, ports, older_than_days=7).forgotten == []
    with store.transaction() as conn:
        conn.execute("UPDATE batches SET collected_at = now() - interval '8 days' WHERE id = %s", (batch["id"],))
    assert forget_collected_batches(store, ports, older_than_days=7).forgotten == [batch["id"]]
    client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="sk-ant-test-0123456789abcdef",
                                 max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch["provider_batch_id"])
    assert _stamp(store, batch["id"], "provider_forgotten_at") is not None
