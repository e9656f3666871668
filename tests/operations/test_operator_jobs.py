"""An operator's actions on jobs (retry, cancel), as a user relies on them: race-safe against the worker
holding a job, refused cleanly on bad input (nothing changes), recorded, and conserved.
"""

from __future__ import annotations

import threading

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.ops.operator import OperatorError, cancel_jobs, job_story, resolve, retry_jobs
from forge_dagster.core.platform.registry import retire
from forge_dagster.core.store import JobSpec
from tests.chaos.conservation import TERMINAL
from tests.helpers import register_processor, succeed, wait_until


@pytest.fixture
def jobs(store):
    register_processor(store)
    report = submit_jobs(store, [JobSpec("p", {"i": i}, external_id=f"row-{i}") for i in range(4)])
    assert not report.rejected
    return report.accepted


def _state(store, job_id):
    return store.jobs.get(job_id)["state"]


def _kill(store, job_id):
    """Let a job die as it does after its last retryable failure."""
    [job] = [j for j in store.jobs.claim(10) if j.id == job_id] or [None]
    assert job is not None
    store.jobs.fail(job, "provider kept failing", retryable=False)


def test_ids_are_forge_ids_or_intake_ids_and_unknown_ones_are_named(store, jobs):
    assert resolve(store, [str(jobs[0]), "row-2"]) == [jobs[0], jobs[2]]
    with pytest.raises(OperatorError, match="no job with id or intake id nope, 999999"):
        resolve(store, ["nope", "999999"])


def test_cancel_ends_open_jobs_with_the_reason_and_records_who_and_why(store, jobs):
    report = cancel_jobs(store, ["row-0", jobs[1]], reason="runaway prompt", actor="ana")
    assert sorted(report.changed) == sorted(jobs[:2])
    row = store.jobs.get(jobs[0])
    assert row["state"] == "cancelled" and row["reason"] == "cancelled: runaway prompt" and row["finished_at"]
    last = store.jobs.events(jobs[0])[-1]
    assert (last["actor"], last["from_state"], last["to_state"]) == ("operator:ana", "pending", "cancelled")
    [action] = store.jobs.operator_actions()
    assert (action["action"], action["actor"], action["changed"]) == ("cancel", "operator:ana", 2)
    assert _state(store, jobs[2]) == "pending"  # not asked for, not touched


def test_bad_requests_change_nothing(store, jobs):
    [claimed] = store.jobs.claim(1)
    succeed(store, [(claimed, {"ok": True})])
    before = store.jobs.counts()
    with pytest.raises(OperatorError, match=f"cannot cancel {claimed.id} is succeeded"):
        cancel_jobs(store, [claimed.id, jobs[1]], reason="x")
    with pytest.raises(OperatorError, match=f"cannot retry {claimed.id} is succeeded"):
        retry_jobs(store, [claimed.id], reason="x")
    with pytest.raises(OperatorError, match="cannot retry .* is pending"):
        retry_jobs(store, [jobs[1]], reason="x")
    with pytest.raises(OperatorError, match="say why"):
        cancel_jobs(store, [jobs[1]], reason="  ")
    with pytest.raises(OperatorError, match="no job"):
        cancel_jobs(store, ["row-404"], reason="x")
    assert store.jobs.counts() == before and store.jobs.operator_actions() == []


def test_a_cancel_landing_while_the_worker_holds_the_job_wins_and_the_late_result_is_refused(store, jobs):
    [job] = store.jobs.claim(1)  # a realtime worker's lease, mid-call
    cancel_jobs(store, [job.id], reason="stop it")
    assert succeed(store, [(job, {"late": True})]) == set()  # the fence refuses the worker's success
    assert store.jobs.fail_many([(job, "late failure", True)]) == {}
    assert store.jobs.heartbeat([job]) == set() and job.lease_lost.is_set()
    row = store.jobs.get(job.id)
    assert row["state"] == "cancelled" and row["output"] is None


def test_a_cancel_racing_a_commit_in_flight_loses_cleanly(store, database_url, jobs):
    """The worker's success holds the row lock uncommitted when the cancel arrives (two real connections):
    the cancel waits, then finds the job finished and reports it, changing nothing."""
    [job] = store.jobs.claim(1)
    outcome = {}
    with store.transaction() as worker:
        assert succeed(store, [(job, {"ok": True})], conn=worker) == {job.id}
        thread = threading.Thread(target=lambda: outcome.update(report=cancel_jobs(store, [job.id], reason="race")))
        thread.start()
        with store.statement() as watcher:  # the cancel is blocked on the worker's row lock
            wait_until(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                " AND query LIKE '%%cancelled%%'").fetchone()[0], what="the cancel waiting on the row lock")
    thread.join(30)
    report = outcome["report"]
    assert report.changed == {} and report.skipped == [(job.id, "it ended before the cancel reached it")]
    assert _state(store, job.id) == "succeeded"


def test_retry_gives_a_fresh_attempt_budget_and_keeps_counting_attempts(store, jobs):
    _kill(store, jobs[0])
    dead = store.jobs.get(jobs[0])
    assert dead["state"] == "failed"
    report = retry_jobs(store, states=["failed"], reason="prompt fixed", actor="ana")
    assert report.changed == {jobs[0]: "failed"}
    row = store.jobs.get(jobs[0])
    assert row["state"] == "pending" and row["max_attempts"] == dead["attempt"] + dead["max_attempts"]
    assert row["reason"] == "retry: prompt fixed" and row["finished_at"] is None
    [again] = [j for j in store.jobs.claim(10) if j.id == jobs[0]]
    assert again.attempt == dead["attempt"] + 1  # a new attempt, with its own ledger row and accepted output
    assert succeed(store, [(again, {"ok": True})]) == {jobs[0]}


def test_retry_on_another_version_pins_it_and_refuses_unknown_or_retired_ones(store, jobs):
    register_processor(store, version="1.1.0", template="Answer better.")
    _kill(store, jobs[0])
    with pytest.raises(OperatorError, match="9.9.9"):
        retry_jobs(store, [jobs[0]], version="9.9.9", reason="x")
    retire(store, "p", "1.1.0")
    with pytest.raises(OperatorError, match="retired"):
        retry_jobs(store, [jobs[0]], version="1.1.0", reason="x")
    assert _state(store, jobs[0]) == "failed"
    register_processor(store, version="1.2.0", template="Answer best.")
    retry_jobs(store, ["row-0"], version="1.2.0", reason="new prompt")
    [again] = [j for j in store.jobs.claim(10) if j.id == jobs[0]]
    assert again.processor_version == "1.2.0"
    assert succeed(store, [(again, {"ok": True})]) == {jobs[0]}  # accepted against the version it now runs


def test_a_cancelled_job_can_be_retried_and_conservation_counts_cancelled_as_terminal(store, jobs):
    cancel_jobs(store, [jobs[0]], reason="paused the processor")
    assert "cancelled" in TERMINAL
    counts = store.jobs.counts()
    assert sum(counts.values()) == len(jobs) and counts["cancelled"] == 1
    retry_jobs(store, [jobs[0]], reason="resumed")
    assert _state(store, jobs[0]) == "pending"
    story = job_story(store, "row-0")
    assert [e["to_state"] for e in story["events"]] == ["pending", "cancelled", "pending"]
    assert "lease_token" not in story["job"]


def test_cancel_by_processor_takes_every_open_job_of_it(store, jobs):
    register_processor(store, name="other")
    [other] = submit_jobs(store, [JobSpec("other", {"i": 9})]).accepted
    report = cancel_jobs(store, processor="p", reason="runaway")
    assert sorted(report.changed) == sorted(jobs)
    assert _state(store, other) == "pending"


def test_a_cancelled_job_with_a_callback_is_stamped(store):
    register_processor(store)
    [job_id] = submit_jobs(store, [JobSpec("p", {"i": 0}, callback_url="https://example.com/cb")]).accepted
    cancel_jobs(store, [job_id], reason="no longer needed")
    with store.transaction() as conn:
        [(topic, payload)] = conn.execute("SELECT topic, payload FROM outbox").fetchall()
    assert topic == "job.stamp" and payload["state"] == "cancelled" and payload["reason"] == "cancelled: no longer needed"
