"""The simulator's OpenAI surface, driven through the official openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

ENDED = {"completed", "failed", "expired", "cancelled"}


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _submit(oai: openai.OpenAI, data: bytes, **kw):
    uploaded = oai.files.create(file=("input.jsonl", data), purpose="batch")
    return oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                              completion_window="24h", **kw)


def test_batch_lifecycle_upload_create_poll_and_download(sim, oai, wait_for, make_batch_file):
    sim.configure(batch_processing_s=3600)
    batch = _submit(oai, make_batch_file(5), metadata={"forge_batch_id": "fb-1"})
    assert batch.status == "validating"
    assert batch.request_counts.total == 5
    running = oai.batches.retrieve(batch.id)
    assert running.status == "in_progress" and running.output_file_id is None

    sim.configure(batch_processing_s=0.2)
    done = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)
    assert done.status == "completed"
    assert done.metadata == {"forge_batch_id": "fb-1"}
    assert done.request_counts.completed == 5 and done.request_counts.failed == 0
    assert done.completed_at is not None and done.error_file_id is None
    lines = _jsonl(oai.files.content(done.output_file_id).text)
    assert [ln["custom_id"] for ln in lines] == [f"req-{i}" for i in range(5)]
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["response"]["body"]["object"] == "chat.completion"
    usage = done.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens == sum(ln["response"]["body"]["usage"]["completion_tokens"] for ln in lines)
    assert oai.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_batch_list_is_newest_first_and_pages_with_after(sim, oai, make_batch_file):
    ids = [_submit(oai, make_batch_file(1, prefix=f"b{i}")).id for i in range(3)]
    first = oai.batches.list(limit=2)
    assert [b.id for b in first.data] == [ids[2], ids[1]]
    assert first.has_more is True
    assert [b.id for b in oai.batches.list(limit=2)] == list(reversed(ids))  # auto-pagination with `after`
    rest = oai.batches.list(limit=2, after=ids[1])
    assert [b.id for b in rest.data] == [ids[0]] and rest.has_more is False


def test_duplicate_custom_id_fails_the_batch_with_duplicate_custom_id_error(sim, oai, wait_for):
    row = {"custom_id": "same", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
    batch = _submit(oai, (json.dumps(row) + "\n" + json.dumps(row) + "\n").encode())
    failed = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)
    assert failed.status == "failed" and failed.failed_at is not None
    assert [e.code for e in failed.errors.data] == ["duplicate_custom_id"]
    assert failed.errors.data[0].line == 2


def test_upload_rejects_batch_lines_missing_required_fields(oai):
    bad = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}).encode()
    with pytest.raises(openai.BadRequestError) as err:
        oai.files.create(file=("input.jsonl", bad), purpose="batch")
    assert "body" in str(err.value)


def test_expired_batch_keeps_partial_results_and_lists_the_rest_as_batch_expired(sim, oai, wait_for,
                                                                                 make_batch_file):
    sim.configure(expire_batches=True, expire_complete_fraction=0.5)
    batch = _submit(oai, make_batch_file(6))
    ended = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)
    assert ended.status == "expired" and ended.expired_at is not None
    outputs = _jsonl(oai.files.content(ended.output_file_id).text)
    errors = _jsonl(oai.files.content(ended.error_file_id).text)
    assert len(outputs) == 3 and len(errors) == 3
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert all(e["response"] is None for e in errors)
    assert {ln["custom_id"] for ln in outputs + errors} == {f"req-{i}" for i in range(6)}
    assert ended.request_counts.completed == 3 and ended.request_counts.failed == 3


def test_cancel_goes_through_cancelling_and_lets_a_fraction_finish(sim, oai, make_batch_file):
    sim.configure(batch_processing_s=3600, cancel_complete_fraction=0.25)
    batch = _submit(oai, make_batch_file(4))
    cancelling = oai.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    cancelled = oai.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    finished = _jsonl(oai.files.content(cancelled.output_file_id).text)
    unfinished = _jsonl(oai.files.content(cancelled.error_file_id).text)
    assert len(finished) == 1 and len(unfinished) == 3
    assert {e["error"]["code"] for e in unfinished} == {"batch_cancelled"}
    with pytest.raises(openai.BadRequestError):
        oai.batches.cancel(batch.id)


@pytest.mark.parametrize("where", ["output", "error"])
def test_line_4xx_arrives_with_status_400_and_error_null(sim, oai, wait_for, make_batch_file, where):
    sim.configure(line_4xx_rate=1.0, line_4xx_file=where)
    batch = _submit(oai, make_batch_file(3))
    ended = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)
    assert ended.status == "completed" and ended.request_counts.failed == 3
    file_id = ended.output_file_id if where == "output" else ended.error_file_id
    assert (ended.output_file_id if where == "error" else ended.error_file_id) is None
    lines = _jsonl(oai.files.content(file_id).text)
    assert all(ln["error"] is None and ln["response"]["status_code"] == 400 for ln in lines)
    assert all("error" in ln["response"]["body"] for ln in lines)


def test_out_of_order_results_are_shuffled_but_cover_every_custom_id(sim, oai, wait_for, make_batch_file):
    sim.configure(out_of_order=True)
    batch = _submit(oai, make_batch_file(12))
    ended = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)
    order = [ln["custom_id"] for ln in _jsonl(oai.files.content(ended.output_file_id).text)]
    expected = [f"req-{i}" for i in range(12)]
    assert order != expected and sorted(order) == sorted(expected)


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_ambiguous_create_still_creates_the_batch_visible_in_the_list(sim, oai, make_batch_file, mode):
    sim.configure(ambiguous_create=1.0, ambiguous_create_mode=mode)
    uploaded = oai.files.create(file=("input.jsonl", make_batch_file(2)), purpose="batch")
    expected = openai.InternalServerError if mode == "503" else openai.APIConnectionError
    with pytest.raises(expected):
        oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    sim.configure(ambiguous_create=0.0)
    listed = oai.batches.list().data
    assert [b.input_file_id for b in listed] == [uploaded.id]
    assert any(r.get("fault") == "ambiguous_create" for r in sim.requests())


def test_requests_without_api_key_are_rejected_401(sim, http):
    response = http.post(sim.openai_base_url + "/chat/completions",
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_chat_usage_reports_cached_and_reasoning_token_details(oai):
    long_context = "Reference material. " * 400  # > 1024 tokens, cacheable on the second call
    messages = [{"role": "system", "content": long_context}, {"role": "user", "content": "summarise"}]
    first = oai.chat.completions.create(model="o4-mini", messages=messages)
    second = oai.chat.completions.create(model="o4-mini", messages=messages)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens >= 1024
    assert first.usage.completion_tokens_details.reasoning_tokens > 0
    assert first.usage.completion_tokens > first.usage.completion_tokens_details.reasoning_tokens


def test_models_list_answers_in_openai_format(oai):
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]
