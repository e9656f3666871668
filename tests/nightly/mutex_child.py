"""A separate process that uses the GPU mutex, for the contention, freeze and crash tests.

python -m tests.nightly.mutex_child contend URL NAME ROUNDS   -> says it is ready, waits for the start signal,
    contends ROUNDS times logging to Redis, then records how many releases woke it
python -m tests.nightly.mutex_child hold URL NAME TTL_MS [DB_URL SCHEMA]
    -> acquires, prints {"fence", "token"}, waits for a line on stdin, then tries extend, a fenced write
       and release, and prints what happened as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from forge_dagster.core.nightly.gpu_mutex import GpuMutex, connect
from forge_dagster.core.store.knowledge_types import FencedOut


def contend(url: str, name: str, rounds: int) -> None:
    client = connect(url)
    mutex = GpuMutex(client, name, ttl_ms=5000)
    client.rpush(f"{name}:ready", os.getpid())
    if client.blpop([f"{name}:go"], timeout=60) is None:  # both processes start contending together
        raise SystemExit("no start signal")
    for _ in range(rounds):
        with mutex.hold(timeout_s=60) as lease:
            if client.incr(f"{name}:occupancy") != 1:
                client.incr(f"{name}:violations")
            client.rpush(f"{name}:log", f"enter {lease.fence} {os.getpid()}")
            for _ in range(50):  # a little work inside the critical section
                client.get(f"{name}:occupancy")
            client.rpush(f"{name}:log", f"exit {lease.fence} {os.getpid()}")
            client.decr(f"{name}:occupancy")
    client.rpush(f"{name}:wakeups", mutex.stats.wakeups)


def hold(url: str, name: str, ttl_ms: int, db_url: str | None, schema: str | None) -> None:
    mutex = GpuMutex(url, name, ttl_ms=ttl_ms)
    lost_at_callback = threading.Event()
    lease = mutex.acquire(timeout_s=30, on_lost=lambda _lease: lost_at_callback.set())
    print(json.dumps({"fence": lease.fence, "token": lease.token, "pid": os.getpid()}), flush=True)
    sys.stdin.readline()  # the test freezes us (SIGSTOP) before sending this line
    outcome: dict = {"extend": lease.extend()}
    if db_url:
        from forge_dagster.core.store import ForgeStore

        with ForgeStore(db_url, schema, pool_size=1) as store:
            try:
                store.knowledge.record_gpu_result(lease.fencing, "test", {"by": "frozen holder"})
                outcome["write"] = "accepted"
            except FencedOut as exc:
                outcome["write"] = f"rejected: {exc}"
    outcome["release"] = lease.release()
    outcome["lost"] = lease.lost.is_set()
    outcome["on_lost_called"] = lost_at_callback.is_set()
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    mode, url, name = sys.argv[1:4]
    if mode == "contend":
        contend(url, name, int(sys.argv[4]))
    elif mode == "hold":
        extra = sys.argv[5:7] if len(sys.argv) >= 7 else [None, None]
        hold(url, name, int(sys.argv[4]), *extra)
    else:
        raise SystemExit(f"unknown mode {mode}")
