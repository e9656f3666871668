"""The outbox relay: at least once, in order per key, retried with backoff, never a phantom message."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import ForgeStore, JobSpec, OutboxMessage
from tests.helpers import register_processor, succeed, wait_until


@pytest.fixture(autouse=True)
def _registered(store: ForgeStore):
    register_processor(store)  # jobs of `p` can succeed


def finish_jobs(store: ForgeStore, n: int, callback_url: str) -> list[int]:
    """n realtime jobs with a callback that succeed through the store (each commit writes its stamp)."""
    ids = submit_jobs(store, [JobSpec("p", {"i": i}, mode="realtime", callback_url=f"{callback_url}/{i}")
                         for i in range(n)]).accepted
    jobs = store.jobs.claim(n)
    succeed(store, [(job, {"answer": job.payload["i"]}) for job in jobs])
    return ids


def stamp_row_ids(store: ForgeStore) -> set[int]:
    with store.transaction() as conn:
        return {r[0] for r in conn.execute("SELECT id FROM outbox WHERE topic = 'job.stamp'")}


def drained(store: ForgeStore, relay) -> bool:
    relay.drain()
    return store.outbox.lag()[0] == 0


def test_every_stamp_arrives_once_at_a_deduping_receiver_that_fails_for_a_while(store, receiver, make_relay):
    ids = finish_jobs(store, 30, receiver.url + "/cb")
    receiver.refuse(10)  # down for a while
    receiver.lose_answers(3)  # then takes three stamps but its answers are lost: they must come again
    relay = make_relay(store)

    wait_until(lambda: drained(store, relay), timeout_s=20, what="the outbox to drain")

    accepted = receiver.accepted("/cb")
    assert set(accepted) == {f"forge-outbox-{i}" for i in stamp_row_ids(store)}
    assert sorted(s.json["job"]["job_id"] for s in accepted.values()) == sorted(ids)
    assert all(s.json["result"] == {"answer": int(s.path.rsplit("/", 1)[1])} for s in accepted.values())
    assert len(receiver.state.duplicates) == 3  # retried after a lost answer; the receiver kept one copy
    assert sum(1 for s in receiver.state.seen if s.status == 503) == 10


def test_rows_of_one_key_arrive_in_order_across_failures(store, receiver, make_relay):
    for i in range(12):  # one transaction each, as pauses and resumes happen
        key = f"key:openai:{'ab'[i % 2]}"
        store.outbox.write([OutboxMessage("key.paused" if i % 4 < 2 else "key.resumed", key,
                                          {"provider": "openai", "alias": "ab"[i % 2], "n": i})])
    receiver.refuse(3)
    relay = make_relay(store, webhook=receiver.url + "/slack", notify_batch=3)

    wait_until(lambda: drained(store, relay), timeout_s=20, what="the outbox to drain")

    arrived = [int(i) for m in receiver.slack_messages() for i in m.headers["x-forge-outbox-ids"].split(",")]
    assert sorted(arrived) == sorted(set(arrived)) and len(arrived) == 12  # every row, once
    with store.transaction() as conn:
        key_of = dict(conn.execute("SELECT id, key FROM outbox").fetchall())
    per_key = defaultdict(list)
    for row_id in arrived:
        per_key[key_of[row_id]].append(row_id)
    assert all(ids == sorted(ids) for ids in per_key.values())


def test_failed_delivery_keeps_the_last_error_and_waits_for_its_backoff(store, receiver, make_relay):
    finish_jobs(store, 1, receiver.url + "/cb")
    receiver.refuse(1)
    relay = make_relay(store, base_delay_s=60)

    # Other transactions on the server may hold the snapshot's xmin back for a moment: wait for the try.
    wait_until(lambda: relay.drain().failed, timeout_s=10, what="the first try")
    [row] = store.outbox.undelivered()
    assert row["attempts"] == 1 and "HTTP 503" in row["last_error"]
    assert row["available_at"] - row["created_at"] > timedelta(seconds=20)  # backoff, not a hot loop
    assert relay.drain().delivered == 0
    assert len(receiver.state.seen) == 1

    with store.transaction() as conn:  # time passes: the backoff is over
        conn.execute("UPDATE outbox SET available_at = now()")
    wait_until(lambda: drained(store, relay), timeout_s=10, what="the second try")
    assert len(receiver.state.seen) == 2
    assert store.outbox.undelivered() == []


def test_transition_that_rolled_back_sends_nothing(store, receiver, make_relay):
    submit_jobs(store, [JobSpec("p", {}, mode="realtime", callback_url=receiver.url + "/cb/1")])
    [job] = store.jobs.claim(1)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        succeed(store, [(job, {"phantom": True})], conn=tx)
        raise RuntimeError("crash before commit")
    relay = make_relay(store, webhook=receiver.url + "/slack")
    assert relay.drain().delivered == 0
    assert receiver.state.seen == []

    succeed(store, [(job, {"real": True})])
    wait_until(lambda: drained(store, relay), timeout_s=10, what="the stamp")
    [stamp] = receiver.accepted("/cb").values()
    assert stamp.json["result"] == {"real": True}


def test_late_committing_transaction_is_delivered_not_skipped(store, receiver, make_relay):
    submit_jobs(store, [JobSpec("p", {"i": i}, mode="realtime", callback_url=f"{receiver.url}/cb/{i}")
                   for i in range(2)])
    slow_job, fast_job = store.jobs.claim(2)
    relay = make_relay(store)
    with store.transaction() as slow:
        succeed(store, [(slow_job, {"slow": True})], conn=slow)  # its stamp exists, uncommitted
        succeed(store, [(fast_job, {"fast": True})])  # commits after the slow one began
        relay.drain()
        assert receiver.state.seen == []  # the relay waits below the open transaction's xmin
    wait_until(lambda: drained(store, relay), timeout_s=10, what="both stamps")
    assert sorted(s.json["result"].popitem()[0] for s in receiver.accepted("/cb").values()) == ["fast", "slow"]


def test_two_relays_side_by_side_keep_order_per_key_and_send_each_row_once(store, receiver, make_relay):
    for i in range(40):
        store.outbox.write([OutboxMessage("key.paused", f"key:openai:k{i % 4}", {"provider": "openai", "n": i})])
    relays = [make_relay(store, webhook=receiver.url + "/slack", notify_batch=2) for _ in range(2)]
    receiver.refuse(4)

    def run(relay) -> None:
        wait_until(lambda: drained(store, relay), timeout_s=20, what="the outbox to drain")

    threads = [threading.Thread(target=run, args=(r,)) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    arrived = [int(i) for m in receiver.slack_messages() for i in m.headers["x-forge-outbox-ids"].split(",")]
    assert len(arrived) == 40 and len(set(arrived)) == 40
    assert receiver.state.duplicates == []
    with store.transaction() as conn:
        key_of = dict(conn.execute("SELECT id, key FROM outbox").fetchall())
    per_key = defaultdict(list)
    for row_id in arrived:
        per_key[key_of[row_id]].append(row_id)
    assert all(ids == sorted(ids) for ids in per_key.values())


def test_without_a_webhook_notifications_wait_and_the_relay_says_so(store, receiver, make_relay):
    store.outbox.write([OutboxMessage("batch.ended", "batch:1", {"batch_id": 1})])
    finish_jobs(store, 1, receiver.url + "/cb")
    relay = make_relay(store, webhook=None)

    wait_until(lambda: relay.drain().held and receiver.accepted("/cb"), timeout_s=10, what="the stamp")
    report = relay.drain()  # the stamp still went; the notification waits
    assert report.held == 1 and "FORGE_SLACK_WEBHOOK_URL" in report.summary()
    assert "none" in relay.describe()
    assert store.outbox.lag()[0] == 1  # kept for when a webhook is configured

    later = make_relay(store, webhook=receiver.url + "/slack")
    wait_until(lambda: drained(store, later), timeout_s=10, what="the notification")
    assert len(receiver.slack_messages()) == 1


def test_forge_work_drains_the_stamps_of_the_jobs_it_finished(store, receiver, database_url, schema, tmp_path):
    import subprocess

    from tests.helpers import ECHO_HANDLER, forge_env, forge_process, register_step

    register_step(store)
    submit_jobs(store, [JobSpec("step", {"i": i}, callback_url=f"{receiver.url}/cb/{i}") for i in range(5)])
    env = forge_env(database_url, schema, FORGE_HOME=str(tmp_path), FORGE_CALLBACK_SECRET="work-secret",
                    FORGE_CALLBACK_ALLOW="127.0.0.1")  # the receiver's address, refused by default
    proc = forge_process(["work", "--until-idle", "--handler", ECHO_HANDLER], env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "outbox relay on" in err and "notifications -> none" in err
    assert sorted(s.path for s in receiver.accepted("/cb").values()) == [f"/cb/{i}" for i in range(5)]
    assert store.outbox.lag()[0] == 0


def test_exit_drain_horizon_is_passed_only_once_a_transaction_running_at_exit_has_committed(
    store, receiver, make_relay,
):
    """What `drain_at_exit` waits on: a stamp committed by a transaction that was still running when the
    process began to stop is readable (and delivered) once the horizon is passed, not before."""
    submit_jobs(store, [JobSpec("p", {"i": 0}, mode="realtime", callback_url=f"{receiver.url}/cb/0")])
    [job] = store.jobs.claim(1)
    relay = make_relay(store)
    outbox = store.outbox
    with store.transaction() as late:
        succeed(store, [(job, {"late": True})], conn=late)  # its stamp exists, not yet committed
        horizon = outbox.horizon()
        assert not outbox.passed(horizon)
        relay.drain()
        assert receiver.state.seen == []
    assert outbox.passed(horizon)
    relay.drain_at_exit()
    [stamp] = receiver.accepted("/cb").values()
    assert stamp.json["result"] == {"late": True}
