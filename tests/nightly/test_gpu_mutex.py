"""The GPU mutex on a real Redis, with real processes: mutual exclusion, loss while frozen (SIGSTOP),
fencing, crash recovery after the TTL, and waiters woken by the release."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from forge_dagster.core.gpu_mutex import FencedOut, GpuMutex, LockLost, LockTimeout, connect
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
    assert len({e[2] for e in log}) == 2  # both processes got the lock


def test_frozen_holder_loses_the_lock_and_cannot_release_extend_or_write(redis_url, database_url, schema,
                                                                         store, mutex_name):
    holder = _child("hold", redis_url, mutex_name, "600", database_url, schema, stdin=subprocess.PIPE)
    try:
        first = _first_line(holder)
        os.kill(holder.pid, signal.SIGSTOP)  # frozen past its TTL: its renewal thread cannot run
        mutex = GpuMutex(redis_url, mutex_name, ttl_ms=5000)
        lease = mutex.acquire(timeout_s=20)
        assert lease.fence > first["fence"]
        store.knowledge.record_gpu_result(lease.resource, lease.fence, "test", {"by": "new holder"})

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
    repo = store.knowledge
    repo.record_gpu_result("forge:mutex:gpu", 7, "test", {"n": 7})
    with pytest.raises(FencedOut):
        repo.record_gpu_result("forge:mutex:gpu", 6, "test", {"n": 6})
    repo.record_gpu_result("forge:mutex:gpu", 7, "test", {"n": "7 again"})  # the same holder may write again
    assert [r["detail"]["n"] for r in repo.gpu_results("forge:mutex:gpu")] == [7, "7 again"]
    assert repo.current_fence("forge:mutex:gpu") == 7
