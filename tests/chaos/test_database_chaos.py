"""PostgreSQL misbehaving under real `forge work` processes: sessions terminated once a second,
and a transaction held open through a whole run. Workers reconnect, nothing is lost or done twice."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from forge_dagster.core.runtime import with_database
from forge_dagster.core.store import ForgeStore, db
from tests.chaos.database_chaos import OBSERVER, run_held_xmin, run_terminations
from tests.chaos.harness import Fleet, enqueue_realtime, own_database, worker_env
from tests.helpers import wait_until

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def chaos_database(database_url):
    """A database of Forge's own on the test server: every session in it may be terminated."""
    with own_database(database_url) as url:
        yield url


def test_workers_survive_terminated_connections_and_lose_nothing(database_url, chaos_database, remote_sim, chaos_home):
    report = run_terminations(database_url, chaos_database, "forge_terminated", remote_sim, chaos_home, jobs=80,
                              workers=2, concurrency=4, chaos_s=2.5, latency_ms=100, timeout_s=90)
    assert not report.conservation.problems, report.conservation.problems
    assert report.conservation.by_state == {"succeeded": 80}
    assert report.terminated > 0
    assert report.workers_exited == 0, f"a worker died instead of reconnecting:\n{report.worker_errors}"


def test_a_transaction_held_open_does_not_stop_progress(chaos_database, remote_sim, chaos_home):
    report = run_held_xmin(chaos_database, "forge_held", remote_sim, chaos_home, jobs=40, workers=2, concurrency=4,
                           timeout_s=90)
    assert not report.conservation.problems, report.conservation.problems
    assert report.conservation.by_state == {"succeeded": 40}
    assert report.notes == ["xmin held to the end: True"]


def test_a_worker_whose_claim_is_cut_off_mid_statement_reconnects_and_carries_on(
    database_url, chaos_database, remote_sim, chaos_home,
):
    """The claim is held behind a lock, its session terminated while it waits, the lock released: the
    worker must take a new connection and go on claiming (as after a failover), not exit."""
    schema = "forge_cut"
    db.migrate(chaos_database, schema)
    fleet = Fleet(worker_env(chaos_database, schema, remote_sim.url, chaos_home), 2)
    with ForgeStore(chaos_database, schema, pool_size=2, application_name=OBSERVER) as store, \
            psycopg.connect(chaos_database, application_name=OBSERVER) as locker, \
            psycopg.connect(database_url, autocommit=True) as admin:
        [first] = enqueue_realtime(store, 1)
        worker = fleet.start()
        try:
            wait_until(lambda: store.jobs.get(first)["state"] == "succeeded", timeout_s=120, what="a worker at work")
            locker.execute(sql.SQL("LOCK TABLE {}.jobs IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(schema)))
            database = conninfo_to_dict(chaos_database)["dbname"]
            waiting = wait_until(lambda: admin.execute(
                "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = %s AND application_name = 'forge' "
                "AND wait_event_type = 'Lock'", (database,)).fetchone()[0], timeout_s=30, what="a claim to wait")
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (waiting,))
            locker.rollback()
            ids = enqueue_realtime(store, 5, tag="after")
            wait_until(lambda: all(store.jobs.get(i)["state"] == "succeeded" for i in ids) or not worker.alive(),
                       timeout_s=60, what="the jobs enqueued after the cut")
            assert worker.alive(), f"the worker exited instead of reconnecting:\n{fleet.errors()}"
        finally:
            fleet.stop_all()


def test_a_worker_started_before_its_database_answers_waits_for_it(database_url, remote_sim, chaos_home):
    """A worker started by a service manager while its database is still coming up (here: not created yet)
    retries instead of exiting, and works once the database is there."""
    name = f"forge_late_{uuid.uuid4().hex[:8]}"
    url = with_database(database_url, name)
    fleet = Fleet(worker_env(url, "forge_late", remote_sim.url, chaos_home), 2)
    worker = fleet.start()
    try:
        wait_until(lambda: "database not ready" in worker.log.with_suffix(".err").read_text() or not worker.alive(),
                   timeout_s=60, what="the worker to find no database")
        assert worker.alive(), fleet.errors()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        db.migrate(url, "forge_late")
        with ForgeStore(url, "forge_late", pool_size=1, application_name=OBSERVER) as store:
            ids = enqueue_realtime(store, 2)
            wait_until(lambda: all(store.jobs.get(i)["state"] == "succeeded" for i in ids) or not worker.alive(),
                       timeout_s=60, what="the worker to come up and work")
            assert worker.alive(), fleet.errors()
    finally:
        fleet.stop_all()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
