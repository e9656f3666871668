"""Real `forge work` processes killed and frozen mid-flight: nothing lost, nothing twice."""

from __future__ import annotations

import pytest

from forge_dagster.core.store import ForgeStore, db
from tests.chaos.harness import Fleet, enqueue_realtime, worker_env
from tests.chaos.process_chaos import run_process_chaos
from tests.helpers import wait_until

pytestmark = pytest.mark.chaos


def test_killed_and_frozen_workers_lose_nothing_and_late_results_are_rejected(
    database_url, chaos_schema, remote_sim, chaos_home,
):
    report = run_process_chaos(database_url, chaos_schema, remote_sim, chaos_home, jobs=100, workers=3,
                               concurrency=4, kill_every_s=1.5, lease_ttl_s=1.5, latency_ms=250, timeout_s=90)
    c = report.conservation
    assert not c.problems, f"{c.problems}\n{report.worker_errors}"
    # A job whose every attempt died with its worker ends dead, saying so; every other one succeeds.
    assert set(c.by_state) <= {"succeeded", "dead"}, c.by_state
    with ForgeStore(database_url, chaos_schema, pool_size=1) as store, store.transaction() as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM jobs WHERE state = 'dead'")]
    assert all("lease expired" in r for r in reasons), reasons
    assert report.kills and report.orphaned > 0, "a kill should have caught calls in flight"
    assert report.paused_held and report.paused_taken_over, f"the frozen worker's jobs were not taken over: {report.notes}"
    # Each lease taken from the frozen worker ended by another's hand; what it came back with was refused.
    assert report.frozen_leases_lost > 0 and report.late_rejected == report.frozen_leases_lost
    assert all(t > 0 for t in report.recovery_s)
    assert report.reclaim_s and max(report.reclaim_s) <= max(report.recovery_s)


def test_a_job_whose_last_attempt_died_with_its_worker_ends_dead_under_realtime_workers_alone(
    database_url, chaos_schema, remote_sim, chaos_home,
):
    """No Dagster sensor runs here: `forge work` processes must free an expired lease whose
    attempts are spent themselves (the claim only takes over leases with attempts left)."""
    with ForgeStore(database_url, chaos_schema, pool_size=2) as store:
        [job_id, other] = enqueue_realtime(store, 2, max_attempts=1)
        assert [j.id for j in store.jobs.claim(1, mode="realtime", ttl_s=0.5, owner="worker-that-died")] == [job_id]
        fleet = Fleet(worker_env(database_url, chaos_schema, remote_sim.url, chaos_home, FORGE_LEASE_TTL_S="2"), 2)
        fleet.start()
        try:
            wait_until(lambda: store.jobs.get(other)["state"] == "succeeded", timeout_s=120, what="a worker at work")
            job = wait_until(lambda: (j := store.jobs.get(job_id))["state"] not in ("running", "pending") and j,
                             timeout_s=15, what="the dead worker's job to end")
        finally:
            fleet.stop_all()
    assert job["state"] == "dead" and "lease expired" in job["reason"], job


def test_workers_frozen_inside_a_pacing_reservation_do_not_stall_a_new_one(
    database_url, chaos_schema, remote_sim, chaos_home,
):
    """A worker stopped (SIGSTOP, a VM pause) while its pacing reservation runs on the server must not keep
    the key's `key_pacing` row locked: the reservation commits on the server, with no COMMIT left for the
    frozen client to send. The reservations are held behind a lock so that every worker is frozen inside
    one; a worker started after the freeze must get its calls through."""
    with ForgeStore(database_url, chaos_schema, pool_size=2) as store:
        [first] = enqueue_realtime(store, 1)
        fleet = Fleet(worker_env(database_url, chaos_schema, remote_sim.url, chaos_home, FORGE_LEASE_TTL_S="2"), 2)
        frozen = [fleet.start(), fleet.start()]
        try:
            wait_until(lambda: store.jobs.get(first)["state"] == "succeeded", timeout_s=120, what="a worker at work")
            with db.connect(database_url, chaos_schema) as locker:
                locker.execute("SELECT 1 FROM key_pacing FOR UPDATE")
                enqueue_realtime(store, 4, tag="held")

                def reservations_waiting() -> int:
                    with store.transaction() as conn:
                        return conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE '%%key_pacing%%' AND pid <> pg_backend_pid()").fetchone()[0]

                wait_until(lambda: reservations_waiting() >= 2, timeout_s=30, what="both workers in a reservation")
                for worker in frozen:
                    fleet.pause(worker)
            # The lock is gone; the frozen workers' reservations run to their end on the server.
            ids = enqueue_realtime(store, 3, tag="after-freeze")
            fleet.start()
            wait_until(lambda: all(store.jobs.get(i)["state"] == "succeeded" for i in ids), timeout_s=30,
                       what="a new worker's calls while the others are frozen inside their reservations")
        finally:
            fleet.stop_all()
