"""Retries and conservation on the batch path: backoff with jitter, cancelled batches, provider errors
inside result lines, and every job accounted for while batches are still in flight."""

from __future__ import annotations

from datetime import timedelta

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import Provider
from forge_dagster.core.providers.results import openai_batch_item
from forge_dagster.core.store import ForgeStore, JobSpec
from tests.helpers import make_due, run_batch_round
from tests.pipeline.conftest import review, ticket
from tests.pipeline.test_engine import enqueue

TERMINAL = {"succeeded", "invalid", "failed", "dead"}
OPEN = {"pending", "claimed", "running", "submitted", "collected"}


def backoffs(store: ForgeStore) -> list[timedelta]:
    """run_after minus the moment each pending job was put back (its updated_at, same transaction)."""
    with store.transaction() as conn:
        return [r[0] for r in conn.execute("SELECT run_after - updated_at FROM jobs WHERE state = 'pending'")]


def test_retry_backoff_puts_run_after_in_the_future_with_jitter(store, catalog, ports, sim):
    sim.configure(malformed_rate=1.0)  # every output fails to parse: retryable
    enqueue(store, [ticket(i) for i in range(12)], max_attempts=3)
    run_batch_round(store, catalog, ports)
    first = backoffs(store)
    assert len(first) == 12
    assert all(timedelta(0) < d <= timedelta(seconds=2) for d in first)  # attempt 1: up to 2 s
    assert len(set(first)) > 1  # jittered, not one wave
    make_due(store)
    run_batch_round(store, catalog, ports)
    second = backoffs(store)
    assert len(second) == 12 and all(timedelta(0) < d <= timedelta(seconds=4) for d in second)  # attempt 2


def test_cancelled_batch_keeps_finished_results_and_requeues_the_rest(store, catalog, ports, sim):
    sim.configure(batch_processing_s=1000, cancel_complete_fraction=0.5)
    ids = enqueue(store, [review(i) for i in range(10)])
    build_and_submit(store, catalog, ports)
    [batch] = store.batches.open_batches()
    ports[Provider.ANTHROPIC].cancel(batch["provider_batch_id"])  # the operator cancels it
    [batch_id] = poll_open_batches(store, ports).ended
    assert store.batches.get(batch_id)["state"] == "ended_cancelled"
    collect_results(store, ports, batch_id)
    validate_batch(store, catalog, batch_id)
    counts = store.jobs.counts()
    assert counts["succeeded"] == 5 and counts["pending"] == 5
    finished = {i for i in ids if store.jobs.get(i)["state"] == "succeeded"}

    sim.configure(batch_processing_s=0)
    make_due(store)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 10}
    for job_id in ids:  # the finished half was kept, not run again
        assert store.jobs.get(job_id)["attempt"] == (1 if job_id in finished else 2)


def _openai_line_500(custom_id: str) -> dict:
    """An OpenAI output line for a request that failed on the provider's side: `error` null and the
    500 inside the response (the shape OpenAI writes; the simulator has no knob for it)."""
    return {"id": "batch_req_5xx", "custom_id": custom_id, "error": None,
            "response": {"status_code": 500, "request_id": "req_5xx",
                         "body": {"error": {"message": "The server had an error while processing your request.",
                                            "type": "server_error", "param": None, "code": None}}}}


def test_5xx_inside_a_result_line_is_retried_then_dead_with_its_reason(store, catalog, ports, sim):
    [job_id] = enqueue(store, [ticket(1)], max_attempts=2)
    for attempt in (1, 2):
        build_and_submit(store, catalog, ports)
        [batch_id] = poll_open_batches(store, ports).ended
        [member] = store.batches.members(batch_id)
        item = openai_batch_item(_openai_line_500(member["custom_id"]))
        store.batches.store_results(batch_id, [(job_id, attempt, item)])  # as collect_results stores lines
        validate_batch(store, catalog, batch_id)
        job = store.jobs.get(job_id)
        if attempt == 1:
            assert job["state"] == "pending" and job["reason"].startswith("http 500: ")
            make_due(store)
    assert job["state"] == "dead"
    assert job["reason"] == ("max attempts (2) reached; last: http 500: "
                             "The server had an error while processing your request.")
    assert [e["attempt"] for e in job["errors"]] == [1, 2]


def conservation(store: ForgeStore, inputs: int) -> dict[str, int]:
    """Check that every input is in exactly one state, that each submitted job sits in exactly one batch
    the provider still has, and that the audit trail ends where each job is; return the counts."""
    counts = store.jobs.counts()
    assert set(counts) <= TERMINAL | OPEN, counts
    assert sum(counts.values()) == inputs, counts
    with store.transaction() as conn:
        in_batches = conn.execute(
            "SELECT count(*) FROM jobs j JOIN batches b ON b.id = j.batch_id "
            "WHERE j.state = 'submitted' AND b.state IN ('in_progress', 'cancelling') "
            "   OR j.state IN ('submitted', 'collected') AND b.state LIKE 'ended_%'").fetchone()[0]
        adrift = conn.execute(
            "SELECT count(*) FROM jobs j WHERE j.state <> (SELECT to_state FROM job_events e "
            "WHERE e.job_id = j.id ORDER BY e.id DESC LIMIT 1)").fetchone()[0]
    assert in_batches == counts.get("submitted", 0) + counts.get("collected", 0)
    assert adrift == 0
    return counts


def test_every_job_is_accounted_for_while_batches_are_in_flight(store, catalog, ports, sim):
    sim.configure(batch_processing_s=1000, malformed_rate=0.2)
    enqueue(store, [ticket(i) for i in range(12)] + [review(i) for i in range(12)], max_attempts=2)
    submit_jobs(store, [JobSpec("ticket_triage", {"subject": "no body"}, processor_version="1.0.0")])
    inputs = 25
    build_and_submit(store, catalog, ports, max_requests_per_batch=5)
    assert conservation(store, inputs) == {"submitted": 24, "failed": 1}

    sim.configure(batch_processing_s=0)
    ended = poll_open_batches(store, ports).ended
    for batch_id in ended[:2]:  # some batches collected and settled, the rest still ended or in flight
        collect_results(store, ports, batch_id)
        conservation(store, inputs)
        validate_batch(store, catalog, batch_id)
        conservation(store, inputs)
    mid = conservation(store, inputs)
    assert mid["submitted"] == 14 and mid.get("succeeded", 0) + mid.get("pending", 0) == 10

    for _ in range(4):  # the rest, and the retries, to the end (as the sensors would drive them)
        make_due(store)
        build_and_submit(store, catalog, ports)
        poll_open_batches(store, ports)
        for batch_id, _provider in store.batches.ended_uncollected():
            collect_results(store, ports, batch_id)
            validate_batch(store, catalog, batch_id)
        counts = conservation(store, inputs)
    assert set(counts) <= TERMINAL and counts["failed"] == 1


def test_a_result_line_carrying_nul_is_stored_and_judged_not_fatal_to_its_batch(store, catalog, ports, sim):
    """PostgreSQL text and jsonb refuse NUL; a provider line that carries one must not fail the batch."""
    ids = enqueue(store, [ticket(1), ticket(2)])
    build_and_submit(store, catalog, ports)
    [batch_id] = poll_open_batches(store, ports).ended
    members = {m["id"]: m for m in store.batches.members(batch_id)}
    line = {"id": "batch_req_nul", "custom_id": members[ids[0]]["custom_id"], "error": None,
            "response": {"status_code": 200, "body": {"choices": [{"finish_reason": "stop", "message": {
                "role": "assistant", "content": "{\"oops\": \"\u0000\"}"}}], "usage": {}}}}
    assert store.batches.store_results(batch_id, [(ids[0], 1, openai_batch_item(line))]) == 1
    collect_results(store, ports, batch_id)  # the other job's line, from the provider
    validate_batch(store, catalog, batch_id)
    assert store.jobs.get(ids[1])["state"] == "succeeded"
    nul_job = store.jobs.get(ids[0])
    assert nul_job["state"] == "pending" and "schema" in nul_job["reason"]  # judged like any bad output
