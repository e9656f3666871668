"""Budgets stop submissions that would exceed them: jobs wait without spending attempts, work in flight
holds budget until it settles, and the operator is told once per scope and day."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.budgets import estimate_cost
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.store import JobSpec
from tests.helpers import make_due, run_batch_round
from tests.platform.conftest import example, ticket_input, write_processor


@pytest.fixture
def catalog(store, tmp_path):
    folder = tmp_path / "processors"
    write_processor(folder, example("ticket_triage"), name="unpriced_triage", model="gpt-unpriced-test")
    return load_catalog(store, [PACKAGE_PROCESSORS_DIR, folder])


def enqueue(store, n: int, name: str = "ticket_triage") -> list[int]:
    return submit_jobs(store, [JobSpec(name, ticket_input(i), processor_version="1.0.0") for i in range(n)]).accepted


def budget_alerts(store) -> list[tuple]:
    with store.transaction() as conn:
        return conn.execute("SELECT topic, key, payload FROM outbox WHERE topic = 'budget.exceeded'").fetchall()


def test_a_budget_stops_submission_jobs_wait_without_spending_attempts_and_the_operator_is_told_once(
        store, catalog, ports, sim):
    store.costs.set_budget("ticket_triage", "0.00001")
    ids = enqueue(store, 3)
    report = build_and_submit(store, catalog, ports)
    assert (report.budget_held, report.batches, report.submitted_jobs) == (3, [], 0)
    assert store.batches.counts() == {}
    for job_id in ids:
        job = store.jobs.get(job_id)
        assert (job["state"], job["attempt"]) == ("pending", 0)
        assert job["reason"].startswith("waiting: daily budget 'ticket_triage' of $0.00001 would be exceeded")
        assert re.search(r"\(\$0 booked today, \$0 in flight, up to \$0\.000\d+ for this request\)$", job["reason"])
        assert [e["to_state"] for e in store.jobs.events(job_id)][-1] == "pending"
    with store.transaction() as conn:
        assert conn.execute("SELECT bool_and(run_after > now()) FROM jobs").fetchone()[0]
    [(topic, key, payload)] = budget_alerts(store)
    assert key == f"budget:ticket_triage:{datetime.now(UTC).date().isoformat()}"
    assert payload["held_jobs"] == 3 and payload["processors"] == ["ticket_triage"]

    make_due(store)
    assert build_and_submit(store, catalog, ports).budget_held == 3
    assert len(budget_alerts(store)) == 1  # told once per scope and day
    assert store.costs.alerts()[0]["held_jobs"] == 6

    store.costs.set_budget("ticket_triage", "10")
    make_due(store)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 3}
    assert {store.jobs.get(j)["attempt"] for j in ids} == {1}  # waiting never cost an attempt


def test_work_in_flight_holds_budget_until_it_settles_and_never_costs_more_than_estimated(
        store, catalog, ports, sim):
    processor = catalog["ticket_triage"]
    one = estimate_cost(processor, render_request(processor, ticket_input(0), "j1a1"))
    store.costs.set_budget("ticket_triage", str(one * 5 / 2))  # room for two requests
    enqueue(store, 5)
    sim.configure(batch_processing_s=1000)
    first = build_and_submit(store, catalog, ports)
    assert (first.submitted_jobs, first.budget_held) == (2, 3)
    make_due(store)
    assert build_and_submit(store, catalog, ports).budget_held == 3  # the two in flight still count

    sim.configure(batch_processing_s=0)
    [batch_id] = poll_open_batches(store, ports).ended
    collect_results(store, ports, batch_id)
    validate_batch(store, catalog, batch_id)
    booked = store.batches.cost(batch_id)
    assert 0 < booked <= 2 * one  # the estimate is a worst case
    make_due(store)
    spent, in_flight = store.costs.usage_today()
    assert spent["ticket_triage"] == booked and in_flight.get("ticket_triage", 0) == 0
    after = build_and_submit(store, catalog, ports)
    assert after.submitted_jobs == (5 * one / 2 - booked) // one  # what is actually booked frees the rest


def test_the_all_processors_budget_covers_every_processor(store, catalog, ports, sim):
    store.costs.set_budget("*", "0")
    enqueue(store, 2)
    submit_jobs(store, [JobSpec("review_sentiment", {"review": "Fine."}, processor_version="1.0.0")])
    report = build_and_submit(store, catalog, ports)
    assert (report.budget_held, report.submitted_jobs) == (3, 0)
    [(_, key, payload)] = budget_alerts(store)
    assert key.startswith("budget:*:") and payload["processors"] == ["review_sentiment", "ticket_triage"]


def test_a_model_without_a_price_cannot_pass_a_budget(store, catalog, ports, sim):
    store.costs.set_budget("*", "100")
    [job_id] = enqueue(store, 1, name="unpriced_triage")
    assert build_and_submit(store, catalog, ports).budget_held == 1
    assert "no price for openai/gpt-unpriced-test" in store.jobs.get(job_id)["reason"]


def test_without_budgets_nothing_is_held(store, catalog, ports, sim):
    enqueue(store, 2)
    assert build_and_submit(store, catalog, ports).budget_held == 0
    assert store.costs.clear_budget("ticket_triage") is False
