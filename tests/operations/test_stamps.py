"""Stamps: a terminal job's result POSTed to its callback_url through the outbox, signed."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.ops.stamps import load_callback_secret, sign, verify_signature
from forge_dagster.core.store import ForgeStore, JobSpec
from tests.helpers import register_processor, run_batch_round, succeed, wait_until
from tests.operations.conftest import SECRET, ticket_specs


@pytest.fixture(autouse=True)
def _registered(store: ForgeStore):
    register_processor(store)  # jobs of `p` can succeed


def test_stamp_signature_verifies_and_a_tampered_or_stale_one_does_not(store, receiver, make_relay):
    submit_jobs(store, [JobSpec("p", {}, mode="realtime", callback_url=receiver.url + "/cb/0")])
    [job] = store.jobs.claim(1)
    succeed(store, [(job, {"ok": True})])
    relay = make_relay(store)
    wait_until(lambda: relay.drain().delivered, timeout_s=10, what="the stamp")

    [stamp] = receiver.accepted("/cb").values()
    ts, sig = stamp.headers["x-forge-timestamp"], stamp.headers["x-forge-signature"]
    assert verify_signature(SECRET.encode(), stamp.body, ts, sig)
    assert not verify_signature(SECRET.encode(), stamp.body.replace(b"true", b"false"), ts, sig)
    assert not verify_signature(b"another-secret", stamp.body, ts, sig)
    assert not verify_signature(SECRET.encode(), stamp.body, ts, sig, now=int(ts) + 3600)  # replayed later
    assert stamp.headers["idempotency-key"] == stamp.json["idempotency_key"]


def test_callback_secret_is_made_once_and_kept_private(tmp_path):
    first = load_callback_secret(tmp_path, {})
    assert first == load_callback_secret(tmp_path, {}) and len(first) >= 32
    assert (tmp_path / "callback_secret").stat().st_mode & 0o077 == 0
    assert load_callback_secret(tmp_path, {"FORGE_CALLBACK_SECRET": "from-env"}) == b"from-env"
    assert sign(first, b"{}", 1) != sign(b"from-env", b"{}", 1)


def _secret_after(barrier, home: str, out) -> None:
    barrier.wait()
    out.put(load_callback_secret(Path(home), {}))


def test_workers_starting_together_share_one_callback_secret(tmp_path):
    """Several `forge work` processes starting at once on a new FORGE_HOME (found by the database chaos run:
    the loser of the race died on a FileExistsError) all sign with the one secret that was made."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_secret_after, args=(barrier, str(tmp_path), out)) for _ in range(6)]
    for proc in procs:
        proc.start()
    secrets = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0] * 6
    assert len(set(secrets)) == 1 and secrets[0] == (tmp_path / "callback_secret").read_bytes().strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["callback_secret"]  # no draft left behind


def test_batch_jobs_are_stamped_once_with_their_validated_result(store, catalog, ports, receiver, make_relay):
    submit_jobs(store, ticket_specs(4, callback_url=receiver.url + "/cb") + ticket_specs(2, prefix="quiet"))
    [batch_id] = run_batch_round(store, catalog, ports)
    from forge_dagster.core.batch.collection import validate_batch

    validate_batch(store, catalog, batch_id)  # validating again settles nothing, stamps nothing twice
    relay = make_relay(store)
    wait_until(lambda: relay.drain() is not None and len(receiver.accepted("/cb")) == 4, timeout_s=15,
               what="four stamps")
    assert store.outbox.lag()[0] == 1  # the batch.ended notification (this relay has no webhook)

    stamps = sorted(receiver.accepted("/cb").values(), key=lambda s: s.path)
    assert [s.path for s in stamps] == [f"/cb/{i}" for i in range(4)]
    for s in stamps:
        assert s.json["job"]["state"] == "succeeded" and s.json["failure"] is None
        assert set(s.json["result"]) == {"category", "priority", "summary"}
        assert float(s.json["cost_usd"]) > 0
    assert receiver.state.duplicates == []


def test_every_terminal_path_stamps_a_job_with_a_callback(store, receiver, make_relay):
    url = receiver.url + "/cb"
    submit_jobs(store, [JobSpec("p", {"i": i}, mode="realtime", max_attempts=1, callback_url=f"{url}/{i}")
                   for i in range(3)])
    ok, bad, lost = store.jobs.claim(3, ttl_s=0.2)
    succeed(store, [(ok, {"fine": True})])
    store.jobs.fail(bad, "provider said no", retryable=False)
    # The third worker crashed: once its lease expires, the sweep ends the job dead (attempts spent).
    wait_until(lambda: store.jobs.sweep_expired().dead == 1, timeout_s=5, what="the lease to expire")
    relay = make_relay(store)
    wait_until(lambda: relay.drain() is not None and len(receiver.accepted("/cb")) == 3, timeout_s=10,
               what="three stamps")

    by_path = {s.path: s.json for s in receiver.accepted("/cb").values()}
    assert by_path[f"/cb/{ok.payload['i']}"]["result"] == {"fine": True}
    assert by_path[f"/cb/{bad.payload['i']}"]["failure"]["reason"] == "provider said no"
    assert by_path[f"/cb/{bad.payload['i']}"]["job"]["state"] == "failed"
    assert by_path[f"/cb/{lost.payload['i']}"]["job"]["state"] == "dead"
    assert "lease expired" in by_path[f"/cb/{lost.payload['i']}"]["failure"]["reason"]


def test_a_slow_receiver_is_served_once_although_the_relay_waits_longer_than_the_store_lets_a_transaction_idle(
    database_url, schema, receiver, make_relay,
):
    """The relay holds its rows locked while it sends; a receiver slower than the store's idle-in-transaction
    limit must not get its round cut off (and the stamps sent again and again)."""
    with ForgeStore(database_url, schema, idle_in_transaction_s=0.3) as store:
        submit_jobs(store, [JobSpec("p", {"i": i}, mode="realtime", callback_url=f"{receiver.url}/cb/{i}")
                       for i in range(2)])
        succeed(store, [(job, {"i": job.payload["i"]}) for job in store.jobs.claim(2)])
        receiver.answer_after(0.5)
        report = make_relay(store).drain()
        assert (report.delivered, report.failed) == (2, 0)
        assert len(receiver.accepted("/cb")) == 2 and receiver.state.duplicates == []
        assert store.outbox.lag()[0] == 0
