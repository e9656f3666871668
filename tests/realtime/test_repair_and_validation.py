"""Realtime answers pass the same fail-closed validation as batch results: a rejected answer is asked
again with the validator's errors (the repair loop of core/platform/repair.py), at most `max_repair_attempts`
times, then the job ends invalid; every answer is billed; 5xx answers are retried within bounds."""

from __future__ import annotations

import pytest

from forge_dagster.core.models import ResultItem, ResultOutcome
from forge_dagster.core.platform.validation import validate_result
from forge_dagster.core.providers.ratelimit import Backoff
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.realtime.calls import CallPolicy

from .conftest import TICKET, chat_calls, enqueue, ring_for, variant


def proxied_ring(proxy) -> KeyRing:
    """The simulator's key, sent through the recording proxy."""
    return KeyRing(keys_from_env({}, simulator_url=proxy.url, timeout_s=10))


def with_processor(store, catalog, **changes):
    return variant(store, catalog, version="9.2.0", **changes)


def calls_of(proxy, i: int) -> list[tuple[dict, int, dict]]:
    """The chat calls made for the i-th enqueued ticket, in order."""
    return [c for c in proxy.chats() if f"Subject: Ticket {i}\n" in c[0]["messages"][1]["content"]]


def answer_item(text: str) -> ResultItem:
    return ResultItem("x", ResultOutcome.SUCCEEDED, status_code=200, text=text, stop_reason="stop")


@pytest.mark.parametrize("knob", ["schema_violation_rate", "malformed_rate"])
def test_a_rejected_answer_is_asked_again_with_the_validators_errors_and_the_loop_stops_at_its_bound(
    sim, proxy, store, catalog, knob,
):
    processor, bounded = with_processor(store, catalog, max_repair_attempts=1)
    sim.configure(**{knob: 1.0})
    ids = enqueue(store, 3, TICKET, version="9.2.0", max_attempts=5)
    stats = RealtimeExecutor(store, bounded, proxied_ring(proxy), RealtimeConfig(concurrency=4)).run_sync(
        until_drained=True)

    assert len(proxy.chats()) == 2 * len(ids), "the first answer and one repair per job, none past the bound"
    for i, job_id in enumerate(ids):
        job = store.jobs.get(job_id)
        assert (job["state"], job["attempt"]) == ("invalid", 1), "repairs happen within the attempt"
        assert job["reason"].startswith("repair attempts (1) exhausted; last: ")
        assert job["output"] is None and job["raw_output"]
        (first, _, first_answer), (repair, _, _) = calls_of(proxy, i)
        original = render_request(processor, {"subject": f"Ticket {i}", "body": "The export button does nothing."},
                                            "x").body
        assert first["messages"] == original["messages"]
        assert repair["messages"][:2] == original["messages"], "the processor's own request, then the repair"
        assistant, ask = repair["messages"][2:]
        assert assistant == {"role": "assistant", "content": first_answer["choices"][0]["message"]["content"]}
        errors = validate_result(answer_item(assistant["content"]), processor).errors
        assert ask["role"] == "user" and errors and all(f"- {e}" in ask["content"] for e in errors)
        assert repair["response_format"] == original["response_format"]  # structured output still asked
    assert (stats.repairs, stats.invalid, stats.succeeded) == (len(ids), len(ids), 0)


def test_a_repaired_answer_is_accepted_and_every_answer_of_the_attempt_is_billed(sim, proxy, store, catalog):
    processor, _ = with_processor(store, catalog)
    sim.configure(schema_violation_rate=0.5)
    ids = enqueue(store, 8, TICKET)
    RealtimeExecutor(store, catalog, proxied_ring(proxy), RealtimeConfig(concurrency=8)).run_sync(until_drained=True)

    repaired = 0
    with store.transaction() as conn:
        ledger = dict(conn.execute("SELECT job_id, input_tokens + output_tokens FROM costs").fetchall())
    for i, job_id in enumerate(ids):
        job, calls = store.jobs.get(job_id), calls_of(proxy, i)
        assert 1 <= len(calls) <= 1 + processor.max_repair_attempts
        if job["state"] == "succeeded":
            assert validate_result(answer_item(calls[-1][2]["choices"][0]["message"]["content"]),
                                   processor).accepted
            repaired += len(calls) > 1
        else:
            assert job["state"] == "invalid" and len(calls) == 1 + processor.max_repair_attempts
        assert ledger[job_id] == sum(a["usage"]["total_tokens"] for _, _, a in calls), "one row, every answer"
    assert repaired >= 1, "no job needed a repair: the scenario did not exercise one"


def test_an_answer_from_an_unpriced_model_is_booked_with_its_tokens_and_no_cost(sim, store, catalog):
    _, unpriced = with_processor(store, catalog, model="ft:gpt-4o-mini:acme:tickets:1")
    ids = enqueue(store, 3, TICKET, version="9.2.0")
    RealtimeExecutor(store, unpriced, ring_for(sim), RealtimeConfig(concurrency=3)).run_sync(until_drained=True)

    assert store.jobs.counts() == {"succeeded": 3}
    with store.transaction() as conn:
        rows = conn.execute("SELECT job_id, model, input_tokens, output_tokens, cost_usd FROM costs "
                            "ORDER BY job_id").fetchall()
    assert [r[0] for r in rows] == ids
    assert all(r[1] == "ft:gpt-4o-mini:acme:tickets:1" and r[2] > 0 and r[3] > 0 and r[4] is None for r in rows)


def test_5xx_answers_are_retried_within_bounds_and_every_job_still_succeeds(sim, store, catalog):
    sim.configure(error_5xx_rate=0.4)
    ids = enqueue(store, 12, TICKET, max_attempts=6)
    config = RealtimeConfig(concurrency=8, retry_base_delay_s=0.05,
                            call=CallPolicy(backoff=Backoff(base_s=0.02), transient_retries=2))
    stats = RealtimeExecutor(store, catalog, ring_for(sim), config).run_sync(until_idle=True)

    statuses = [c["status"] for c in chat_calls(sim)]
    server_errors = sum(1 for s in statuses if s >= 500)
    assert store.jobs.counts() == {"succeeded": len(ids)}
    assert server_errors >= 3, "too few 5xx answers: the scenario did not exercise retries"
    # Each 5xx was either retried in the call (at most 2 per answer) or sent the job back to the queue.
    assert server_errors == stats.call_retries + stats.retried
    assert sum(store.jobs.get(i)["attempt"] for i in ids) == len(ids) + stats.retried
    assert store.operations.metrics_snapshot().provider_calls == {("openai", "ok"): len(ids),
                                                                   ("openai", "transient"): server_errors}
