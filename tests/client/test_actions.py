"""Retry and cancel through the client: the operator's actions (core/ops/operator), jobs named by Forge id
or intake id, and every bad request refused before anything is written."""

from __future__ import annotations

import pytest

from forge_dagster import Forge
from forge_dagster.client import OperatorError
from forge_dagster.core.platform.registry import retire
from forge_dagster.core.realtime.handler_worker import Worker
from tests.helpers import register_step
from tests.store.handlers import echo

from .conftest import NESTED_SCHEMA, TICKET
from .test_submit import tickets


def snapshot(store) -> tuple:
    """Every job's state, attempt budget and version, and the operator actions recorded."""
    with store.transaction() as conn:
        jobs = conn.execute("SELECT id, state, max_attempts, processor_version, reason FROM jobs ORDER BY id").fetchall()
        actions = conn.execute("SELECT count(*) FROM operator_actions").fetchone()[0]
    return jobs, actions


def test_cancel_by_intake_id_and_forge_id_ends_open_jobs_with_the_reason(forge: Forge, store):
    sent = forge.submit(TICKET, tickets(3), ids=["c0", "c1", "c2"])
    report = forge.cancel(["c0", str(sent.ids[1])], reason="wrong prompt")
    assert sorted(report.changed) == sent.ids[:2] and report.skipped == []
    frame = forge.results(sent)
    assert frame["state"].tolist() == ["cancelled", "cancelled", "pending"]
    assert frame["reason"][0] == "cancelled: wrong prompt"
    assert forge.wait(sent.ids[:2], timeout=0) == {"cancelled": 2}


def test_cancel_by_processor_takes_its_open_jobs_only(forge: Forge, store, echo_step):
    sent = forge.submit(TICKET, tickets(2))
    other = forge.submit("echo_step", [{"subject": "s"}])
    assert sorted(forge.cancel(processor=TICKET, reason="paused").changed) == sent.ids
    assert store.jobs.get(other.ids[0])["state"] == "pending"


def test_bad_requests_change_nothing(forge: Forge, store, echo_step):
    open_jobs = forge.submit(TICKET, tickets(1), ids=["open"])
    done = forge.submit("echo_step", [{"subject": "s"}], ids=["done"])
    Worker(store, echo, [echo_step], concurrency=1, idle_sleep_s=0.01).run(until_idle=True)
    cancelled = forge.submit(TICKET, tickets(1, start=5), ids=["gone"])
    forge.cancel("gone", reason="not needed")
    before = snapshot(store)

    for action, says in [
        (lambda: forge.retry("done", reason="again"), r"cannot retry \d+ is succeeded"),
        (lambda: forge.retry(open_jobs, reason="again"), r"cannot retry \d+ is pending"),
        (lambda: forge.cancel(done, reason="stop"), r"cannot cancel \d+ is succeeded"),
        (lambda: forge.cancel("gone", reason="stop"), r"cannot cancel \d+ is cancelled"),
        (lambda: forge.cancel(["open", "missing"], reason="stop"), "no job with id or intake id missing"),
        (lambda: forge.retry(cancelled, reason="again", version="9.9.9"), "--version 9.9.9"),
        (lambda: forge.retry(cancelled, reason=" "), "say why"),
        (lambda: forge.cancel("open", reason=""), "say why"),
    ]:
        with pytest.raises(OperatorError, match=says):
            action()
        assert snapshot(store) == before, says


def test_retry_on_a_retired_version_is_refused(forge: Forge, store):
    sent = forge.submit(TICKET, tickets(1), ids=["r"])
    forge.cancel(sent, reason="rework")
    retire(store, TICKET, "1.0.0")
    before = snapshot(store)
    with pytest.raises(OperatorError, match="retired"):
        forge.retry("r", reason="again", version="1.0.0")
    assert snapshot(store) == before


def test_retry_gives_a_fresh_budget_on_another_version_and_the_job_then_succeeds(forge: Forge, store):
    strict = register_step(store, "strict_step", "tests.store.handlers:off_schema", response_schema=NESTED_SCHEMA)
    fixed = register_step(store, "strict_step", version="1.1.0", response_schema=NESTED_SCHEMA)
    sent = forge.submit("strict_step", [{"subject": "a"}, {"subject": "b"}], ids=["s0", "s1"])
    Worker(store, lambda job: {"echo": 1}, [strict], concurrency=1, idle_sleep_s=0.01).run(until_idle=True)
    assert forge.wait(sent, timeout=0) == {"invalid": 2}

    report = forge.retry(states=["invalid"], processor="strict_step", version="1.1.0", attempts=2,
                         reason="handler fixed")
    assert sorted(report.changed) == sent.ids
    Worker(store, echo, [fixed], concurrency=1, idle_sleep_s=0.01).run(until_idle=True)
    frame = forge.results("strict_step")
    assert frame["state"].tolist() == ["succeeded", "succeeded"] and set(frame["version"]) == {"1.1.0"}
    assert frame["echo.subject"].tolist() == ["a", "b"]
    assert [store.jobs.get(i)["max_attempts"] for i in sent.ids] == [3, 3], "attempt 1 spent, then 2 more"


def test_an_empty_selection_is_nothing_to_do(forge: Forge, store):
    sent = forge.submit(TICKET, tickets(2))
    frame = forge.results(sent)
    before = snapshot(store)
    assert forge.retry(frame[frame.state == "invalid"], reason="none invalid").changed == {}
    assert forge.cancel([], reason="nothing").changed == {}
    assert snapshot(store) == before
