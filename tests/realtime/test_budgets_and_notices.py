"""Budgets apply to realtime work as to batches (jobs wait without spending attempts, the operator is told
once, work in flight holds budget), and realtime jobs turned invalid or dead are told through the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from forge_dagster.core.ops.notify import render_message
from forge_dagster.core.platform.budgets import estimate_attempt_cost
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.realtime import RealtimeConfig, RealtimeExecutor
from forge_dagster.core.realtime.calls import CallPolicy
from forge_dagster.core.store.types import OutboxRow
from tests.helpers import make_due, wait_until

from .conftest import TICKET, chat_calls, enqueue, ring_for, start_executor, variant


def ticket(i: int) -> dict:
    return {"subject": f"Ticket {i}", "body": "The export button does nothing."}


def budget_for(catalog, attempts: float) -> Decimal:
    """A daily budget with room for `attempts` realtime attempts of a ticket, at their worst case."""
    processor = catalog[TICKET]
    return estimate_attempt_cost(processor, render_request(processor, ticket(0), "x"), realtime=True) * Decimal(
        str(attempts))


def outbox(store, topic: str) -> list[OutboxRow]:
    with store.transaction() as conn:
        rows = conn.execute("SELECT id, topic, key, payload, attempts FROM outbox WHERE topic = %s ORDER BY id",
                            (topic,)).fetchall()
    return [OutboxRow(*row) for row in rows]


def test_a_budget_holds_realtime_jobs_without_spending_attempts_and_the_operator_is_told_once(
    sim, store, catalog,
):
    budget = budget_for(catalog, 2.5)
    store.costs.set_budget(TICKET, str(budget))
    ids = enqueue(store, 6)
    stats = RealtimeExecutor(store, catalog, ring_for(sim), RealtimeConfig(concurrency=16)).run_sync(
        until_drained=True)

    assert store.jobs.counts() == {"succeeded": 2, "pending": 4}
    assert stats.budget_held == 4 and len(chat_calls(sim)) == 2, "held jobs are never called"
    for job in (store.jobs.get(i) for i in ids):
        if job["state"] == "pending":
            assert job["attempt"] == 0, "waiting for a budget must not spend an attempt"
            assert job["reason"].startswith(f"waiting: daily budget '{TICKET}' of $")
    with store.transaction() as conn:
        assert conn.execute("SELECT bool_and(run_after > now()) FROM jobs WHERE state = 'pending'").fetchone()[0]
    [alert] = outbox(store, "budget.exceeded")
    assert alert.key == f"budget:{TICKET}:{datetime.now(UTC).date().isoformat()}"
    assert alert.payload["held_jobs"] == 4
    assert store.costs.usage_today()[0][TICKET] <= budget

    make_due(store)  # what the two cost is far below their worst case: room for more, not for all
    RealtimeExecutor(store, catalog, ring_for(sim), RealtimeConfig(concurrency=16)).run_sync(until_drained=True)
    assert 2 < store.jobs.counts()["succeeded"] < len(ids)
    assert len(outbox(store, "budget.exceeded")) == 1, "told once per scope and day"
    assert store.costs.usage_today()[0][TICKET] <= budget

    store.costs.set_budget(TICKET, "10")
    make_due(store)
    RealtimeExecutor(store, catalog, ring_for(sim), RealtimeConfig(concurrency=16)).run_sync(until_drained=True)
    assert store.jobs.counts() == {"succeeded": len(ids)}
    assert {store.jobs.get(i)["attempt"] for i in ids} == {1}


def test_realtime_work_in_flight_holds_budget_until_it_settles(sim, store, catalog, running):
    store.costs.set_budget(TICKET, str(budget_for(catalog, 2.5)))
    sim.configure(latency_ms=3000)
    worker = start_executor(running, store, catalog, ring_for(sim), RealtimeConfig(concurrency=8, idle_sleep_s=0.05))

    def running_jobs() -> int:
        return store.jobs.counts().get("running", 0)

    first = enqueue(store, 1)  # claimed and admitted alone: each admission is a separate window
    wait_until(lambda: running_jobs() == 1, timeout_s=10, what="the first job in flight")
    second = enqueue(store, 1)
    wait_until(lambda: running_jobs() == 2, timeout_s=10, what="the second job in flight")
    [third] = enqueue(store, 1)
    wait_until(lambda: store.jobs.get(third)["state"] == "pending" and store.jobs.get(third)["reason"],
               timeout_s=10, what="the third job to be held")
    assert store.jobs.get(third)["reason"].startswith(f"waiting: daily budget '{TICKET}'"), \
        "the two calls in flight must hold their budget until they settle"
    assert running_jobs() == 2
    wait_until(lambda: store.jobs.counts().get("succeeded", 0) == 2, timeout_s=15, what="the two to finish")
    worker.finish()
    assert {store.jobs.get(i)["state"] for i in first + second} == {"succeeded"}


def test_realtime_jobs_turned_invalid_or_dead_are_told_through_the_outbox(sim, store, catalog):
    _, strict_catalog = variant(store, catalog, version="9.3.0", max_repair_attempts=0)
    sim.configure(schema_violation_rate=1.0)
    invalid = enqueue(store, 3, TICKET, version="9.3.0")
    RealtimeExecutor(store, strict_catalog, ring_for(sim), RealtimeConfig(concurrency=8)).run_sync(
        until_drained=True)
    assert store.jobs.counts() == {"invalid": 3}

    sim.configure(schema_violation_rate=0.0, error_5xx_rate=1.0)
    dead = enqueue(store, 2, TICKET, max_attempts=1)
    no_retries = RealtimeConfig(concurrency=8, call=CallPolicy(transient_retries=0))
    RealtimeExecutor(store, catalog, ring_for(sim), no_retries).run_sync(until_drained=True)
    assert store.jobs.counts() == {"invalid": 3, "dead": 2}

    notices = outbox(store, "jobs.invalid_or_dead")
    assert {n.key for n in notices} == {f"realtime:{TICKET}"}
    told = {s["job"]: s["state"] for n in notices for s in n.payload["samples"]}
    assert told == {**dict.fromkeys(invalid, "invalid"), **dict.fromkeys(dead, "dead")}
    assert sum(n.payload["invalid"] for n in notices) == 3 and sum(n.payload["dead"] for n in notices) == 2
    text = str(render_message(notices))
    assert "3 invalid, 2 dead* from realtime ticket_triage" in text
    assert f"job {invalid[0]} (invalid): repair attempts (0) exhausted" in text
