"""A real `dagster dev` tree (webserver, daemon, code server, run workers, step processes) on Forge's
definitions, in a process group of its own, with the means to find and SIGKILL each kind of process in it
and to start it again as a service manager would.

Processes are told apart by command line and parentage: the daemon and the webserver by their modules, a
run worker is a multiprocessing child of the code server (`dagster api grpc`), a step process is one of a
run worker. Which run a step works for is read from the store's run leases (a lease names its holders as
host:pid:random).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.chaos.harness import ROOT


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class DagsterTree:
    """`python -m dagster dev -m forge_dagster.definitions` with `env`; every start is a new process group."""

    env: dict[str, str]
    logs: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    groups: list[int] = field(default_factory=list)  # every process group started, for the final cleanup

    def start(self) -> None:
        if not self.port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        log = open(self.logs / f"dagster-dev-{len(self.groups)}.log", "w")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-m", "forge_dagster.definitions", "-h", "127.0.0.1",
             "-p", str(self.port)], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        self.groups.append(self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def members(self) -> list[psutil.Process]:
        """Live processes of every group this tree started (orphaned run workers included)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) in self.groups and _alive(proc):
                    found.append(proc)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return found

    def find(self, kind: str) -> list[psutil.Process]:
        """Live processes of one kind: daemon, webserver, code_server, run_worker, step."""
        members = self.members()
        lines = {p.pid: _cmdline(p) for p in members}

        def parent_line(p: psutil.Process) -> str:
            try:
                return lines.get(p.ppid(), "")
            except psutil.NoSuchProcess:
                return ""

        def spawned(p: psutil.Process) -> bool:
            return "spawn_main" in lines[p.pid]

        if kind == "daemon":
            return [p for p in members if "dagster._daemon run" in lines[p.pid]]
        if kind == "webserver":
            return [p for p in members if "dagster_webserver" in lines[p.pid]]
        if kind == "code_server":
            return [p for p in members if "dagster api grpc" in lines[p.pid]]
        workers = [p for p in members if spawned(p) and "dagster api grpc" in parent_line(p)]
        if kind == "run_worker":
            return workers
        if kind == "step":
            ids = {w.pid for w in workers}
            return [p for p in members if spawned(p) and _ppid(p) in ids]
        raise ValueError(kind)

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_tree(self) -> None:
        """SIGKILL the whole current tree (its process group): as a host or container loss would."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)

    def ensure_running(self) -> bool:
        """Start the tree again if its root is gone (a daemon that dies takes `dagster dev` down with it);
        True when it was restarted. Orphaned run workers of the old tree are left to finish, as a service
        manager that restarts a unit leaves them."""
        if self.running():
            return False
        self.start()
        return True

    def stop(self) -> None:
        """SIGTERM then SIGKILL every group ever started."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in self.groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGTERM and self.proc is not None:
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    pass


def _ppid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.NoSuchProcess:
        return None


def owner_pid(owner: str) -> int | None:
    """The pid in a store owner name host:pid:random, when the host is this one."""
    parts = owner.split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname():
        return None
    return int(parts[1]) if parts[1].isdigit() else None
