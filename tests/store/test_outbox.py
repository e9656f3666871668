"""The transactional outbox: atomic with transitions, and a relay read that never skips a late commit.

Delivery itself (order per key, retries, two relays side by side) is tested in tests/operations/test_relay.py.
"""

from __future__ import annotations

import psycopg
import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.ops.notify import sweep_notices
from forge_dagster.core.store import ForgeStore, JobSpec, LeaseLost, OutboxMessage
from tests.helpers import accept, register_processor, register_step, wait_until


@pytest.fixture(autouse=True)
def _registered(store: ForgeStore):
    register_processor(store)  # jobs of `p` can succeed


def _relay_once(store: ForgeStore) -> list[int]:
    """One pass of the relay's own read (every lane) and mark, without sending anything."""
    with store.transaction() as conn:
        rows = store.outbox.fetch_ready(conn, [], include=False)
        store.outbox.mark_delivered(conn, [r.id for r in rows])
    return [r.id for r in rows]


def test_rolled_back_transition_leaves_no_outbox_row(store: ForgeStore):
    [job_id] = submit_jobs(store, [JobSpec("p", {}, mode="realtime")]).accepted
    job = store.jobs.claim(1)[0]
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.jobs.complete(job, accept(store, job, {"ok": True}),
                       outbox=[OutboxMessage("job.done", f"job:{job_id}", {"id": job_id})], conn=tx)
        raise RuntimeError("crash before commit")
    assert store.outbox.lag()[0] == 0
    assert store.jobs.get(job_id)["state"] == "running"

    store.jobs.complete(job, accept(store, job, {"ok": True}),
                   outbox=[OutboxMessage("job.done", f"job:{job_id}", {"id": job_id})])
    assert store.outbox.lag()[0] == 1


def test_lost_lease_writes_no_outbox_row(store: ForgeStore):
    submit_jobs(store, [JobSpec("p", {}, mode="realtime")])
    job = store.jobs.claim(1)[0]
    store.jobs.complete(job, accept(store, job, {}))
    with pytest.raises(LeaseLost):
        store.jobs.complete(job, accept(store, job, {}), outbox=[OutboxMessage("job.done", "k", {})])
    assert store.outbox.lag()[0] == 0


def test_relay_does_not_skip_a_transaction_that_commits_late(store: ForgeStore, database_url: str, schema: str):
    slow = psycopg.connect(database_url, options=f"-c search_path={schema}")
    try:
        slow.execute("INSERT INTO outbox (topic, key, payload) VALUES ('t', 'slow', '{}')")  # not committed yet
        store.outbox.write([OutboxMessage("t", "fast", {})])  # commits after slow began
        # The fast row's transaction is newer than the open one: the relay waits for the open one.
        assert _relay_once(store) == []
        slow.commit()
        # Once no older transaction is open anywhere on the server, both rows go out (other sessions on a
        # shared server may hold the snapshot's xmin back for a moment: wait for it, bounded).
        delivered: list[int] = []
        wait_until(lambda: delivered.extend(_relay_once(store)) or len(delivered) == 2, timeout_s=30,
                   what="both outbox rows to be relayed")
    finally:
        slow.close()
    assert sorted(delivered) == sorted(set(delivered))  # none twice
    assert store.outbox.lag()[0] == 0


def _notices(store: ForgeStore) -> list[tuple[str, dict]]:
    with store.transaction() as conn:
        return conn.execute("SELECT key, payload FROM outbox WHERE topic = 'jobs.invalid_or_dead' ORDER BY id"
                            ).fetchall()


def test_jobs_the_sweep_turns_dead_are_told_in_its_transaction(store: ForgeStore):
    submit_jobs(store, [JobSpec("p", {"i": i}, mode="realtime", max_attempts=1) for i in range(3)])
    store.jobs.claim(3, ttl_s=0.05)

    def all_expired() -> bool:
        with store.transaction() as conn:
            return conn.execute("SELECT bool_and(lease_expires_at < now()) FROM jobs").fetchone()[0]

    wait_until(all_expired, timeout_s=10, what="the leases to expire")
    assert store.jobs.sweep_expired(notices=sweep_notices).dead == 3
    [(key, payload)] = _notices(store)
    assert key == "sweep" and payload["source"] == "sweep" and payload["dead"] == 3
    assert all(s["reason"].startswith("max attempts (1) reached") for s in payload["samples"])


def test_jobs_forge_work_turns_dead_are_told_once(store: ForgeStore):
    from forge_dagster.core.realtime.handler_worker import Worker

    step = register_step(store)
    ids = submit_jobs(store, [JobSpec("step", {"i": i}, max_attempts=1) for i in range(2)]).accepted

    def crash(job):
        raise RuntimeError("boom")

    Worker(store, crash, [step], concurrency=1, idle_sleep_s=0.01).run(until_idle=True)
    notices = _notices(store)
    assert sum(p["dead"] for _, p in notices) == 2 and {k for k, _ in notices} == {"worker"}
    assert sorted(s["job"] for _, p in notices for s in p["samples"]) == sorted(ids)
