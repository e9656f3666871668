"""The transactional outbox: atomic with transitions, and a relay that never skips a late commit."""

from __future__ import annotations

import psycopg
import pytest

from forge_dagster.core.store import JobSpec, LeaseLost, LeaseStore, OutboxMessage
from tests.helpers import wait_until


def _relay_once(store: LeaseStore) -> list[int]:
    with store.transaction() as conn:
        rows = store.fetch_deliverable(conn)
        store.mark_delivered(conn, [r.id for r in rows])
    return [r.id for r in rows]


def test_rolled_back_transition_leaves_no_outbox_row(store: LeaseStore):
    [job_id] = store.enqueue([JobSpec("p", {}, mode="realtime")]).accepted
    job = store.claim(1)[0]
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.complete(job, {"ok": True}, outbox=[OutboxMessage("job.done", f"job:{job_id}", {"id": job_id})],
                       conn=tx)
        raise RuntimeError("crash before commit")
    assert store.outbox_lag()[0] == 0
    assert store.get_job(job_id)["state"] == "running"

    store.complete(job, {"ok": True}, outbox=[OutboxMessage("job.done", f"job:{job_id}", {"id": job_id})])
    assert store.outbox_lag()[0] == 1


def test_lost_lease_writes_no_outbox_row(store: LeaseStore):
    store.enqueue([JobSpec("p", {}, mode="realtime")])
    job = store.claim(1)[0]
    store.complete(job, {})
    with pytest.raises(LeaseLost):
        store.complete(job, {}, outbox=[OutboxMessage("job.done", "k", {})])
    assert store.outbox_lag()[0] == 0


def test_relay_does_not_skip_a_transaction_that_commits_late(store: LeaseStore, database_url: str, schema: str):
    slow = psycopg.connect(database_url, options=f"-c search_path={schema}")
    try:
        slow.execute("INSERT INTO outbox (topic, key, payload) VALUES ('t', 'slow', '{}')")  # not committed yet
        store.write_outbox([OutboxMessage("t", "fast", {})])  # commits after slow began
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
    assert store.outbox_lag()[0] == 0


def test_relay_delivers_in_order_per_key(store: LeaseStore):
    store.write_outbox([OutboxMessage("t", "a", {"n": 1}), OutboxMessage("t", "a", {"n": 2}),
                        OutboxMessage("t", "b", {"n": 1})])
    with store.transaction() as conn:
        rows = store.fetch_deliverable(conn)
        first_a = next(r for r in rows if r.key == "a")
        # A failed delivery holds back the rest of its key, not other keys.
        store.mark_delivery_failed(conn, first_a.id, "receiver down", delay_s=0)
        store.mark_delivered(conn, [r.id for r in rows if r.key == "b"])
    with store.transaction() as conn:
        rows = store.fetch_deliverable(conn)
        assert [(r.key, r.payload["n"], r.attempts) for r in rows] == [("a", 1, 1)]
