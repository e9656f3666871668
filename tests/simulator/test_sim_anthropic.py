"""The simulator's Anthropic surface, driven through the official anthropic SDK."""

from __future__ import annotations

import anthropic
import pytest


def _ended(batch) -> bool:
    return batch.processing_status == "ended"


def test_batch_lifecycle_counts_stay_processing_until_ended_then_results_stream(sim, claude, wait_for,
                                                                             make_requests):
    sim.configure(batch_processing_s=3600)
    batch = claude.messages.batches.create(requests=make_requests(4))
    assert batch.type == "message_batch" and batch.processing_status == "in_progress"
    running = claude.messages.batches.retrieve(batch.id)
    counts = running.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (4, 0, 0, 0, 0)
    assert running.results_url is None and running.ended_at is None
    with pytest.raises(anthropic.AnthropicError):
        claude.messages.batches.results(batch.id)

    sim.configure(batch_processing_s=0.2)
    ended = wait_for(lambda: claude.messages.batches.retrieve(batch.id), _ended)
    assert ended.request_counts.succeeded == 4 and ended.request_counts.processing == 0
    assert ended.ended_at is not None
    assert ended.results_url == f"{sim.url}/v1/messages/batches/{batch.id}/results"
    results = list(claude.messages.batches.results(batch.id))
    assert [r.custom_id for r in results] == [f"req-{i}" for i in range(4)]
    for r in results:
        assert r.result.type == "succeeded"
        assert r.result.message.stop_reason == "end_turn"
        assert r.result.message.usage.output_tokens > 0


def test_batch_list_is_newest_first_and_pages_both_ways(sim, claude, make_requests):
    ids = [claude.messages.batches.create(requests=make_requests(1, prefix=f"b{i}")).id for i in range(3)]
    page = claude.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more
    assert page.first_id == ids[2] and page.last_id == ids[1]
    assert [b.id for b in claude.messages.batches.list(limit=2)] == list(reversed(ids))
    older = claude.messages.batches.list(limit=2, after_id=ids[1])
    assert [b.id for b in older.data] == [ids[0]] and not older.has_more
    newer = claude.messages.batches.list(limit=1, before_id=ids[1])
    assert [b.id for b in newer.data] == [ids[2]]


def test_duplicate_custom_id_is_rejected_at_create(claude, make_requests):
    requests = make_requests(2)
    requests[1]["custom_id"] = requests[0]["custom_id"]
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.batches.create(requests=requests)
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "Duplicate custom_id" in err.value.body["error"]["message"]


def test_expired_batch_keeps_partial_results_and_marks_the_rest_expired(sim, claude, wait_for, make_requests):
    sim.configure(expire_batches=True, expire_complete_fraction=0.5)
    batch = claude.messages.batches.create(requests=make_requests(6))
    ended = wait_for(lambda: claude.messages.batches.retrieve(batch.id), _ended)
    assert ended.request_counts.succeeded == 3 and ended.request_counts.expired == 3
    kinds = [r.result.type for r in claude.messages.batches.results(batch.id)]
    assert sorted(kinds) == ["expired"] * 3 + ["succeeded"] * 3


def test_cancel_goes_through_canceling_and_lets_a_fraction_finish(sim, claude, make_requests):
    sim.configure(batch_processing_s=3600, cancel_complete_fraction=0.5)
    batch = claude.messages.batches.create(requests=make_requests(4))
    canceling = claude.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 4
    ended = claude.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 2 and ended.request_counts.canceled == 2
    kinds = sorted(r.result.type for r in claude.messages.batches.results(batch.id))
    assert kinds == ["canceled", "canceled", "succeeded", "succeeded"]


def test_line_4xx_becomes_an_errored_result(sim, claude, wait_for, make_requests):
    sim.configure(line_4xx_rate=1.0)
    batch = claude.messages.batches.create(requests=make_requests(2))
    ended = wait_for(lambda: claude.messages.batches.retrieve(batch.id), _ended)
    assert ended.request_counts.errored == 2
    for r in claude.messages.batches.results(batch.id):
        assert r.result.type == "errored"
        assert r.result.error.error.type == "invalid_request_error"


def test_out_of_order_results_cover_every_custom_id(sim, claude, wait_for, make_requests):
    sim.configure(out_of_order=True)
    batch = claude.messages.batches.create(requests=make_requests(12))
    wait_for(lambda: claude.messages.batches.retrieve(batch.id), _ended)
    order = [r.custom_id for r in claude.messages.batches.results(batch.id)]
    expected = [f"req-{i}" for i in range(12)]
    assert order != expected and sorted(order) == sorted(expected)


def test_ambiguous_create_answers_503_but_the_batch_exists(sim, claude, make_requests):
    sim.configure(ambiguous_create=1.0)
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.batches.create(requests=make_requests(2, prefix="amb"))
    sim.configure(ambiguous_create=0.0)
    [batch] = claude.messages.batches.list().data
    assert batch.request_counts.processing + batch.request_counts.succeeded == 2


def test_messages_and_count_tokens_answer_in_anthropic_format(claude):
    params = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Name three rivers."}]}
    message = claude.messages.create(max_tokens=200, **params)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0
    counted = claude.messages.count_tokens(**params)
    assert counted.input_tokens == message.usage.input_tokens
    assert "claude-haiku-4-5" in [m.id for m in claude.models.list()]


def test_missing_x_api_key_is_rejected_401(sim, http):
    response = http.post(sim.url + "/v1/messages", headers={"anthropic-version": "2023-06-01"},
                          json={"model": "claude-haiku-4-5", "max_tokens": 10,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
