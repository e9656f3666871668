"""`forge work --processes N`: N worker processes under one supervisor, so one host's every core does work.

Each child is `forge work` itself with `--processes 1` (its own interpreter, store connections and key
ring; the keys' limits are shared through the store, so N children together stay within them). The
supervisor restarts a child that dies (a crash, a kill, the OOM killer) after a backoff that grows while
it keeps dying; a child that exits 0 (`--until-idle` found nothing left) is done. On SIGTERM / SIGINT it
passes SIGTERM to every child, which stops as `forge work` does (no new claim, calls in flight finished
or released), waits for them, and kills only those still running after `grace_s`. A child dies with its
supervisor (PR_SET_PDEATHSIG on Linux): a supervisor killed hard leaves no worker behind, only leases that
expire, as one killed worker does. The children's last stdout lines (their stats, one JSON object each)
are summed into one.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the child outlives a supervisor killed hard
        pass


def default_processes() -> int:
    """The cores this process may use: its CPU affinity, within a cgroup v2 quota (`cpu.max`, as a
    container's CPU limit sets it) when there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


@dataclass
class Child:
    slot: int
    proc: subprocess.Popen
    started: float
    stdout: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None


@dataclass(frozen=True)
class SupervisorPolicy:
    restart_base_s: float = 0.5  # first restart delay; doubled while a child keeps dying young
    restart_cap_s: float = 30.0
    healthy_after_s: float = 30.0  # a child that lived this long resets its backoff
    grace_s: float = 30.0  # on stop: time children get after SIGTERM before SIGKILL
    poll_s: float = 0.2


class Supervisor:
    """Keeps `processes` copies of `argv` running until stopped (or until every copy exited 0)."""

    def __init__(self, argv: list[str], processes: int, policy: SupervisorPolicy | None = None) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.argv, self.processes = list(argv), processes
        self.policy = policy or SupervisorPolicy()
        self.restarts = 0
        self._children: dict[int, Child] = {}
        self._finished: list[Child] = []
        self._failures = Counter[int]()

    def _start(self, slot: int) -> Child:
        proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        child = Child(slot, proc, time.monotonic())
        child.reader = threading.Thread(target=_read_lines, args=(proc, child.stdout), daemon=True)
        child.reader.start()
        print(f"forge work: worker {slot} started (pid {proc.pid})", file=sys.stderr, flush=True)
        return child

    def run(self, stop: threading.Event) -> int:
        """Supervise until `stop` is set or every child exited 0; returns the exit code (0: clean)."""
        due: dict[int, float] = {}  # slot -> when to (re)start it
        for slot in range(self.processes):
            self._children[slot] = self._start(slot)
        while not stop.is_set() and (self._children or due):
            now = time.monotonic()
            for slot, child in list(self._children.items()):
                code = child.proc.poll()
                if code is None:
                    continue
                del self._children[slot]
                self._finished.append(child)
                if code == 0:
                    continue  # done (--until-idle): not restarted
                lived = now - child.started
                self._failures[slot] = 0 if lived >= self.policy.healthy_after_s else self._failures[slot] + 1
                delay = min(self.policy.restart_cap_s, self.policy.restart_base_s * 2 ** self._failures[slot])
                print(f"forge work: worker {slot} (pid {child.proc.pid}) exited with {code} after {lived:.1f} s; "
                      f"restarting in {delay:.1f} s", file=sys.stderr, flush=True)
                due[slot] = now + delay
            for slot, when in list(due.items()):
                if when <= now:
                    del due[slot]
                    self.restarts += 1
                    self._children[slot] = self._start(slot)
            stop.wait(self.policy.poll_s)
        return self._stop_all()

    def _stop_all(self) -> int:
        """SIGTERM to every child, SIGKILL to those still running after `grace_s`; 0 if all exited cleanly."""
        children = list(self._children.values())
        for child in children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.policy.grace_s
        clean = True
        for child in children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) still running after %.0f s: killed", child.slot, child.proc.pid,
                            self.policy.grace_s)
                child.proc.kill()
                child.proc.wait()
                clean = False
            # A child still starting dies of the SIGTERM itself (its handler not yet set): stopped as asked.
            clean = clean and child.proc.returncode in (0, -signal.SIGTERM)
        self._finished.extend(children)
        self._children.clear()
        return 0 if clean else 1

    def totals(self) -> dict[str, int]:
        """The children's stats (the last JSON line each printed), summed."""
        total: Counter[str] = Counter()
        for child in self._finished:
            if child.reader is not None:
                child.reader.join(5)
            for line in reversed(child.stdout):
                try:
                    stats = json.loads(line)
                except ValueError:
                    continue
                if isinstance(stats, dict):
                    total.update({k: v for k, v in stats.items() if isinstance(v, int)})
                    break
        return dict(total)


def _read_lines(proc: subprocess.Popen, into: list[str]) -> None:
    """Keep a child's stdout lines (so its pipe never fills)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(line.strip())
