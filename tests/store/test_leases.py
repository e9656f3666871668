"""The lease protocol: claims, fencing, takeover, heartbeats, recovery, dead letters."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta

import psycopg
import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.realtime.handler_worker import SWEEP_EVERY_S, Worker
from forge_dagster.core.store import ForgeStore, JobSpec, LeaseLost, SweepReport
from tests.helpers import (
    accept,
    forge_env,
    forge_process,
    register_processor,
    register_step,
    succeed,
    wait_until,
)


@pytest.fixture(autouse=True)
def _registered(store: ForgeStore):
    """Jobs of `p` (a realtime LLM processor) and `step` (a handler step) can succeed: both are registered."""
    register_processor(store)
    register_step(store)


def _lease_expired(store: ForgeStore, job_id: int) -> bool:
    with store.transaction() as conn:
        return conn.execute("SELECT lease_expires_at < now() FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]


def test_claim_counts_the_attempt_and_issues_a_new_token(store: ForgeStore):
    submit_jobs(store, [JobSpec("p", {"i": 1}, mode="realtime")])
    first = store.jobs.claim(1, ttl_s=0.2)[0]
    wait_until(lambda: _lease_expired(store, first.id), what="lease expiry")
    second = store.jobs.claim(1)[0]
    assert (first.id, first.attempt, second.attempt) == (second.id, 1, 2)
    assert first.lease_token != second.lease_token


def test_stale_worker_cannot_complete_after_takeover(store: ForgeStore):
    [job_id] = submit_jobs(store, [JobSpec("p", {"i": 1}, mode="realtime")]).accepted
    worker_a = store.jobs.claim(1, ttl_s=0.2, owner="A")[0]
    wait_until(lambda: _lease_expired(store, job_id), what="A's lease to expire")
    worker_b = store.jobs.claim(1, owner="B")[0]
    assert worker_b.id == job_id

    with pytest.raises(LeaseLost):
        store.jobs.complete(worker_a, accept(store, worker_a, {"by": "A"}))
    assert store.jobs.heartbeat([worker_a]) == set()
    store.jobs.complete(worker_b, accept(store, worker_b, {"by": "B"}))

    job = store.jobs.get(job_id)
    assert (job["state"], job["output"], job["attempt"]) == ("succeeded", {"by": "B"}, 2)
    transitions = [(e["from_state"], e["to_state"], e["actor"]) for e in store.jobs.events(job_id)]
    assert transitions == [(None, "pending", store.owner), ("pending", "running", "A"),
                           ("running", "running", "B"), ("running", "succeeded", store.owner)]


def test_a_worker_frozen_inside_a_transaction_loses_its_locks_and_its_job_is_taken_over(
    store: ForgeStore, database_url: str, schema: str,
):
    """A worker stopped (SIGSTOP, a stalled VM) between a fenced write and its commit holds the row lock;
    SKIP LOCKED claims would pass the job by for as long as it stays frozen. The server ends such a
    session once it has sat idle in its transaction past the limit, and the job is taken over."""
    [job_id] = submit_jobs(store, [JobSpec("p", {}, mode="realtime")]).accepted
    with ForgeStore(database_url, schema, lease_ttl_s=0.5, idle_in_transaction_s=1.0, owner="frozen") as frozen:
        job = frozen.jobs.claim(1)[0]
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            with frozen.transaction() as conn:
                assert succeed(frozen, [(job, {"by": "frozen"})], conn=conn) == {job_id}  # row locked
                taken = wait_until(lambda: store.jobs.claim(1, owner="B"), timeout_s=30, what="the takeover")
                conn.execute("SELECT 1")  # it wakes up: its session is gone, nothing it wrote counts
    assert [j.id for j in taken] == [job_id]
    store.jobs.complete(taken[0], accept(store, taken[0], {"by": "B"}))
    assert store.jobs.get(job_id)["output"] == {"by": "B"}


def test_expired_lease_is_swept_back_to_pending(store: ForgeStore):
    [job_id] = submit_jobs(store, [JobSpec("p", {}, mode="realtime")]).accepted
    store.jobs.claim(1, ttl_s=0.1)
    wait_until(lambda: _lease_expired(store, job_id), what="lease expiry")
    report = store.jobs.sweep_expired()
    assert (report.requeued, report.dead) == (1, 0)
    job = store.jobs.get(job_id)
    assert (job["state"], job["lease_token"]) == ("pending", None)
    assert job["reason"] == "lease expired while running (the worker died during its provider call)"


def test_builder_crashes_before_submission_never_spend_a_batch_jobs_attempts(store: ForgeStore):
    """A batch job claimed by a builder that dies before putting it in a batch never reached a provider:
    whether the next claim takes it over or the sweep frees it, its attempt is given back, so five crashes
    on a job allowed two attempts leave it unspent, never dead."""
    [job_id] = submit_jobs(store, [JobSpec("p", {}, mode="batch", max_attempts=2)]).accepted
    for crash in range(5):
        [job] = store.jobs.claim(1, mode="batch", to_state="claimed", ttl_s=0.1)
        assert job.attempt == 1, f"crash {crash}: attempt {job.attempt}"
        wait_until(lambda: _lease_expired(store, job_id), what="the dead builder's lease to expire")
        if crash % 2:
            assert store.jobs.sweep_expired() == SweepReport(requeued=1, dead=0)
            row = store.jobs.get(job_id)
            assert (row["state"], row["attempt"]) == ("pending", 0)
            assert row["reason"] == "lease expired before submission (attempt given back)"
    assert "reclaimed: lease expired before submission (attempt not charged)" in \
        [e["reason"] for e in store.jobs.events(job_id)]


def test_always_crashing_job_ends_dead_after_max_attempts(store: ForgeStore):
    step = register_step(store, "crashing")
    [job_id] = submit_jobs(store, [JobSpec("crashing", {}, max_attempts=3)]).accepted

    def crash(job):
        raise RuntimeError(f"boom on attempt {job.attempt}")

    Worker(store, crash, [step], concurrency=1, retry_base_delay_s=0.01, idle_sleep_s=0.01).run(until_idle=True)
    job = store.jobs.get(job_id)
    assert job["state"] == "dead"
    assert job["attempt"] == 3
    assert job["reason"].startswith("max attempts (3) reached; last: RuntimeError: boom on attempt 3")
    assert [e["reason"] for e in job["errors"]] == [f"RuntimeError: boom on attempt {i}" for i in (1, 2, 3)]
    assert [e["to_state"] for e in store.jobs.events(job_id)] == ["pending", "running", "pending", "running",
                                                             "pending", "running", "dead"]


def test_non_retryable_failure_fails_at_once(store: ForgeStore):
    [job_id] = submit_jobs(store, [JobSpec("p", {}, mode="realtime", max_attempts=5)]).accepted
    job = store.jobs.claim(1)[0]
    assert store.jobs.fail(job, "invalid request: bad model", retryable=False) == "failed"
    assert store.jobs.get(job_id)["reason"] == "invalid request: bad model"


def test_cpu_busy_worker_keeps_its_lease(store: ForgeStore):
    """Heartbeats run off the handler's thread: a handler spinning for 3x the TTL keeps its lease."""
    step = register_step(store, "spinning")
    [job_id] = submit_jobs(store, [JobSpec("spinning", {})]).accepted
    ttl = 1.0
    stolen: list = []
    busy = threading.Event()

    def spin(job):
        busy.set()
        end = time.monotonic() + 3 * ttl
        x = 0
        while time.monotonic() < end:
            x += 1  # pure-Python CPU work
        return {"spins": x > 0}

    def thief():
        busy.wait(10)
        end = time.monotonic() + 3 * ttl
        while time.monotonic() < end:
            stolen.extend(store.jobs.claim(1, owner="thief", mode="handler"))
            time.sleep(0.1)

    t = threading.Thread(target=thief)
    t.start()
    stats = Worker(store, spin, [step], concurrency=1, lease_ttl_s=ttl).run(until_idle=True)
    t.join()
    assert stolen == []
    assert stats.lease_lost == 0
    job = store.jobs.get(job_id)
    assert (job["state"], job["attempt"]) == ("succeeded", 1)


def _db_now(store: ForgeStore) -> datetime:
    with store.transaction() as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _stderr_lines(proc: subprocess.Popen) -> list[str]:
    """The lines `proc` writes on stderr, collected by a thread as they come."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return lines


def test_killed_worker_job_is_reclaimed_within_ttl_plus_sweep_interval(store: ForgeStore, database_url: str,
                                                                        schema: str):
    ttl_s, slack_s = 1.0, 3.0
    handler = "tests.store.handlers:block_first_attempt"
    register_step(store, "stalling", handler)
    [job_id] = submit_jobs(store, [JobSpec("stalling", {})]).accepted
    env = forge_env(database_url, schema, FORGE_LEASE_TTL_S=str(ttl_s))
    hung = forge_process(["work", "--handler", handler], env=env)
    rescuer = None
    try:
        wait_until(lambda: store.jobs.get(job_id)["state"] == "running", timeout_s=60, what="job running")
        # The rescuer is already in its claim loop (it announces its relay just before) when the kill comes.
        rescuer = forge_process(["work", "--until-idle", "--handler", handler], env=env, stderr=subprocess.PIPE,
                                text=True)
        said = _stderr_lines(rescuer)
        wait_until(lambda: any("outbox relay on" in line for line in said), timeout_s=60, what="rescuer up")
        killed_at = _db_now(store)
        hung.send_signal(signal.SIGKILL)
        hung.wait()
        assert rescuer.wait(timeout=120) == 0, said
    finally:
        for proc in (hung, rescuer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    job = store.jobs.get(job_id)
    assert (job["state"], job["attempt"]) == ("succeeded", 2)
    events = store.jobs.events(job_id)
    assert [e["to_state"] for e in events].count("succeeded") == 1
    first = next(e for e in events if e["attempt"] == 1 and e["to_state"] == "running")
    reclaim = next(e for e in events if e["attempt"] == 2 and e["to_state"] == "running")
    assert reclaim["actor"] != first["actor"]
    # No operator: the rescuer's claim (or its sweep) takes the job once the dead worker's lease expires.
    assert reclaim["at"] - killed_at <= timedelta(seconds=ttl_s + SWEEP_EVERY_S + slack_s)


def test_taken_over_worker_stops_its_handler_and_writes_nothing(store: ForgeStore):
    step = register_step(store, "patient")
    [job_id] = submit_jobs(store, [JobSpec("patient", {})]).accepted
    started, seen = threading.Event(), {}

    def patient(job):
        started.set()
        seen["signalled"] = job.lease_lost.wait(timeout=60)  # a long handler watching its lease
        return {"by": "A"}

    worker = Worker(store, patient, [step], concurrency=1, lease_ttl_s=1.0)
    runner = threading.Thread(target=lambda: seen.update(stats=worker.run(max_jobs=1)))
    runner.start()
    assert started.wait(30)

    def take_over():  # A stalls past its lease (a long pause, a partition): B claims the job
        with store.transaction() as conn:
            conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (job_id,))
        return store.jobs.claim(1, owner="B", mode="handler")

    [taken] = wait_until(take_over, timeout_s=30, what="B to take the job over")
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert seen["signalled"] is True  # the heartbeat told the handler to stop
    assert (seen["stats"].lease_lost, seen["stats"].succeeded, seen["stats"].failed) == (1, 0, 0)
    job = store.jobs.get(job_id)
    assert (job["state"], job["lease_owner"], job["output"]) == ("running", "B", None)

    store.jobs.complete(taken, accept(store, taken, {"by": "B"}))
    assert store.jobs.get(job_id)["output"] == {"by": "B"}
    assert [e["to_state"] for e in store.jobs.events(job_id)].count("succeeded") == 1


def test_eight_worker_processes_drain_20000_jobs_exactly_once(store: ForgeStore, database_url: str, schema: str):
    n = 20_000
    accepted = submit_jobs(store, [JobSpec("step", {"i": i}) for i in range(n)]).accepted
    assert len(accepted) == n
    env = forge_env(database_url, schema)
    workers = [forge_process(["work", "--until-idle", "--concurrency", "4", "--handler", "tests.store.handlers:echo"],
                             env=env) for _ in range(8)]
    assert [w.wait(timeout=600) for w in workers] == [0] * 8

    assert store.jobs.counts() == {"succeeded": n}
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        per_job = conn.execute(
            "SELECT count(*) FILTER (WHERE to_state = 'succeeded'), count(DISTINCT job_id) "
            "FROM job_events WHERE to_state = 'succeeded'").fetchone()
        owners = conn.execute("SELECT count(DISTINCT actor) FROM job_events WHERE to_state = 'running'").fetchone()[0]
    assert per_job == (n, n)  # every job succeeded exactly once
    assert owners > 1  # the work really was shared
