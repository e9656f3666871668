"""The batch path through the engine: retries, expiry, fail-closed validation, idempotent collection."""

from __future__ import annotations

import psycopg

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import Provider, ProviderRequest
from forge_dagster.core.store import ForgeStore, JobSpec
from tests.helpers import make_due, run_batch_round
from tests.pipeline.conftest import review, ticket


def enqueue(store: ForgeStore, lines: list[dict], max_attempts: int = 3) -> list[int]:
    specs = [JobSpec(line["processor"], line["input"], external_id=line["id"], processor_version="1.0.0",
                     max_attempts=max_attempts) for line in lines]
    return submit_jobs(store, specs).accepted






def test_jobs_of_both_providers_succeed_with_validated_outputs_and_cost(store, catalog, ports, sim):
    ids = enqueue(store, [ticket(i) for i in range(6)] + [review(i) for i in range(6)])
    ended = run_batch_round(store, catalog, ports)
    assert len(ended) == 2  # one batch per provider/model/processor group
    assert store.jobs.counts() == {"succeeded": 12}
    job = store.jobs.get(ids[0])
    assert set(job["output"]) == {"category", "priority", "summary"}
    assert job["cost_usd"] > 0
    assert store.batches.cost() == sum(store.jobs.get(i)["cost_usd"] for i in ids)


def test_expired_batch_keeps_finished_results_and_requeues_the_rest(store, catalog, ports, sim):
    sim.configure(expire_batches=True, expire_complete_fraction=0.5)
    ids = enqueue(store, [ticket(i) for i in range(20)])
    [batch_id] = run_batch_round(store, catalog, ports)
    assert store.batches.get(batch_id)["state"] == "collected"
    counts = store.jobs.counts()
    assert 0 < counts["succeeded"] < 20 and counts["succeeded"] + counts["pending"] == 20
    finished_first = {i for i in ids if store.jobs.get(i)["state"] == "succeeded"}

    sim.configure(expire_batches=False)
    make_due(store)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 20}
    for job_id in ids:  # finished results were kept, not run again; the rest ran a second attempt
        assert store.jobs.get(job_id)["attempt"] == (1 if job_id in finished_first else 2)


def test_malformed_outputs_never_succeed_and_end_invalid_after_max_attempts(store, catalog, ports, sim):
    sim.configure(malformed_rate=1.0)
    ids = enqueue(store, [ticket(i) for i in range(5)], max_attempts=2)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"pending": 5}
    make_due(store)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"invalid": 5}
    job = store.jobs.get(ids[0])
    assert job["output"] is None
    assert job["reason"].startswith("max attempts (2) reached; last: parse")
    assert job["raw_output"]  # the raw body is kept for the operator


def test_schema_violating_outputs_never_succeed(store, catalog, ports, sim):
    sim.configure(schema_violation_rate=1.0)
    enqueue(store, [review(i) for i in range(4)], max_attempts=1)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"invalid": 4}
    with store.transaction() as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM jobs")]
    assert all("schema" in r for r in reasons)


def test_second_collection_books_nothing_twice(store, catalog, ports, sim, database_url, schema):
    ids = enqueue(store, [ticket(i) for i in range(5)])
    [batch_id] = run_batch_round(store, catalog, ports)
    cost_before = store.batches.cost()
    again = collect_results(store, ports, batch_id)
    verdicts = validate_batch(store, catalog, batch_id)
    assert again.stored_now == 0 and verdicts.by_state == {}
    assert store.batches.cost() == cost_before
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        assert conn.execute("SELECT count(*) FROM costs").fetchone()[0] == 5
        succeeded_events = conn.execute(
            "SELECT count(*) FROM job_events WHERE to_state = 'succeeded'").fetchone()[0]
    assert succeeded_events == len(ids)


def test_unknown_processor_and_bad_input_fail_with_a_reason_and_the_rest_go_on(store, catalog, ports, sim):
    good = enqueue(store, [ticket(1)])
    bad = submit_jobs(store, [JobSpec("no_such", {"x": 1}), JobSpec("ticket_triage", {"subject": "no body"})]).accepted
    run_batch_round(store, catalog, ports)
    assert store.jobs.get(good[0])["state"] == "succeeded"
    assert [store.jobs.get(i)["state"] for i in bad] == ["failed", "failed"]
    assert "unknown processor 'no_such'" in store.jobs.get(bad[0])["reason"]
    assert "body" in store.jobs.get(bad[1])["reason"]


def test_batch_the_provider_lost_is_requeued_not_stranded(store, catalog, ports, sim):
    enqueue(store, [ticket(i) for i in range(3)])
    sim.configure(batch_processing_s=1000)
    build_and_submit(store, catalog, ports)
    sim.reset()  # the provider forgets every batch
    ended = poll_open_batches(store, ports).ended
    assert len(ended) == 1
    collect_results(store, ports, ended[0])
    validate_batch(store, catalog, ended[0])
    assert store.jobs.counts() == {"pending": 3}


def test_batch_whose_results_are_gone_when_collected_is_requeued_not_stranded(store, catalog, ports, sim):
    enqueue(store, [ticket(i) for i in range(3)])
    build_and_submit(store, catalog, ports)
    [batch_id] = poll_open_batches(store, ports).ended  # ended at the provider
    sim.reset()  # then the provider forgets it before its results are read
    collect_results(store, ports, batch_id)
    validate_batch(store, catalog, batch_id)
    assert store.jobs.counts() == {"pending": 3}
    for member in store.batches.members(batch_id):
        last = store.jobs.events(member["id"])[-1]
        assert last["to_state"] == "pending" and last["reason"]  # requeued, and says why


def test_a_rate_limited_batch_create_waits_with_its_attempt_given_back(store, catalog, ports, sim):
    ids = enqueue(store, [ticket(i) for i in range(3)], max_attempts=1)
    sim.configure(rpm_limit=1)
    ports[Provider.OPENAI].complete(ProviderRequest("spend-the-minute", {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
    build_and_submit(store, catalog, ports)  # the create is answered 429 with a retry-after
    assert store.jobs.counts() == {"pending": 3}  # one attempt allowed, and none spent on a call that never ran
    for job_id in ids:
        job = store.jobs.get(job_id)
        assert job["attempt"] == 0 and "rate-limited" in job["reason"]
    sim.configure(rpm_limit=None)
    make_due(store)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 3}
