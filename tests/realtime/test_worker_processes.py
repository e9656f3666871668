"""`forge work --processes N`: N worker processes under one supervisor. A worker that dies is started again
and the work goes on; SIGTERM to the supervisor stops every worker cleanly (their calls in flight released,
no process left behind) and it exits 0 with their stats summed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading

from forge_dagster.core.store import ForgeStore
from tests.chaos.harness import enqueue_realtime, worker_env
from tests.helpers import forge_process, session_forge_home, wait_until

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_supervisor_restarts_a_dead_worker_and_stops_them_all_on_sigterm(store: ForgeStore, database_url: str,
                                                                          schema: str, remote_sim):
    remote_sim.configure(latency_ms=300)
    ids = enqueue_realtime(store, 400)
    env = worker_env(database_url, schema, remote_sim.url, session_forge_home(), FORGE_LEASE_TTL_S="60")
    proc = forge_process(["work", "--processes", "2", "--concurrency", "4", "--drain-s", "0.5"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()

    def started() -> dict[int, list[int]]:
        by_slot: dict[int, list[int]] = {}
        for line in list(lines):
            if m := STARTED.search(line):
                by_slot.setdefault(int(m[1]), []).append(int(m[2]))
        return by_slot

    def succeeded() -> int:
        return store.jobs.counts().get("succeeded", 0)

    try:
        first = wait_until(lambda: (s := started()) and len(s) == 2 and s, timeout_s=120, what="two workers")
        wait_until(lambda: succeeded() >= 10, timeout_s=120, what="work done")
        victim = first[0][0]
        os.kill(victim, signal.SIGKILL)
        again = wait_until(lambda: len(started().get(0, [])) == 2 and started(), timeout_s=60,
                           what="worker 0 started again")
        replacement = again[0][1]
        done_before = succeeded()
        wait_until(lambda: succeeded() >= done_before + 10, timeout_s=120, what="work after the restart")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert not any(_alive(pid) for pid in (replacement, first[1][0])), "a worker outlived its supervisor"
    totals = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert totals["processes"] == 2 and totals["restarts"] == 1
    counts = store.jobs.counts()
    assert sum(counts.values()) == len(ids)  # conservation: every job in exactly one state
    assert set(counts) <= {"succeeded", "pending", "running"}, counts
    # Only the killed worker's jobs may still hold leases (they expire); the workers stopped by SIGTERM
    # released theirs.
    assert counts.get("running", 0) <= 8, counts  # its calls and its outcomes not yet written
