"""Hosts on one machine: network namespaces joined by veth links to a bridge in a namespace of its own, so
traffic between them stays inside the namespaces (the root namespace has no address on their network).

Each host runs its processes under `ip netns exec` in a UTS namespace of its own named after it (lease
owners read `host-c:pid:...`), each in a process group of its own, so a host's processes can be killed at
once and nothing outlives the teardown. A partition takes a host's link down at the bridge; healing puts it
back. Needs root and `ip`; `available()` says whether this machine can.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def available() -> str | None:
    """None when namespaces can be built here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    """One namespace with one address; starts processes in it."""

    name: str  # host-a ...
    netns: str
    address: str
    logs: Path
    groups: list[subprocess.Popen] = field(default_factory=list)

    def command(self, argv: list[str], *, user: str | None = None) -> list[str]:
        """`argv` run in this host's network namespace with its own hostname (and as `user`)."""
        inner = ["runuser", "-u", user, "--", *argv] if user else argv
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--", "sh", "-c",
                f'hostname {self.name} && exec "$@"', "sh", *inner]

    def start(self, label: str, argv: list[str], env: dict[str, str], *, user: str | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        """Start `argv` here in a process group of its own, stdout and stderr to `<logs>/<label>.out|err`
        (`ip netns exec`, `unshare` and `sh` each exec the next: the pid is the process's own)."""
        with open(self.logs / f"{label}.out", "w") as out, open(self.logs / f"{label}.err", "w") as err:
            proc = subprocess.Popen(self.command(argv, user=user), env=env, cwd=cwd, stdout=out, stderr=err,
                                    start_new_session=True)
        self.groups.append(proc)
        return proc

    def run(self, argv: list[str], env: dict[str, str], *, timeout_s: float = 120.0,
            user: str | None = None) -> subprocess.CompletedProcess:
        """Run `argv` here to its end; its output captured."""
        return subprocess.run(self.command(argv, user=user), env=env, capture_output=True, text=True,
                              timeout=timeout_s)

    def stop_all(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process group started here, SIGKILL what is left after `grace_s`."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in self.groups:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 10.0)
            for proc in self.groups:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass


@dataclass
class Network:
    """A bridge in namespace `<prefix>-sw` and one namespace per host on 10.<n>.0.0/24."""

    hosts: dict[str, Host]
    switch: str
    subnet: str

    @classmethod
    def build(cls, names: list[str], logs: Path, *, subnet: str = "10.231.0") -> Network:
        """Namespaces for `names` (host-a ... get .1, .2, ...), joined by one bridge; loopback up in each."""
        tag = uuid.uuid4().hex[:6]
        switch = f"fg{tag}sw"
        net = cls({}, switch, subnet)
        try:
            _ip("netns", "add", switch)
            _ip("-n", switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", switch, "link", "set", "br0", "up")
            for i, name in enumerate(names, start=1):
                ns, short = f"fg{tag}{name[-1]}", name[-1]
                _ip("netns", "add", ns)
                # The pair is created in the host's namespace: `eth0` there, `v<x>` at the bridge.
                _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"v{short}", "netns", switch)
                _ip("-n", switch, "link", "set", f"v{short}", "master", "br0")
                _ip("-n", switch, "link", "set", f"v{short}", "up")
                _ip("-n", ns, "addr", "add", f"{subnet}.{i}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                net.hosts[name] = Host(name, ns, f"{subnet}.{i}", logs)
        except BaseException:
            net.teardown()
            raise
        return net

    def partition(self, name: str) -> None:
        """Take `name`'s link down at the bridge: its packets go nowhere, nobody else's reach it."""
        _ip("-n", self.switch, "link", "set", f"v{name[-1]}", "down")

    def heal(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", f"v{name[-1]}", "up")

    def teardown(self) -> None:
        """Stop every process started on a host, then delete every namespace (their links go with them)."""
        for host in self.hosts.values():
            host.stop_all()
        for ns in [h.netns for h in self.hosts.values()] + [self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def namespaces(self) -> list[str]:
        return [h.netns for h in self.hosts.values()] + [self.switch]


def leftover_namespaces(names: list[str]) -> list[str]:
    """Which of `names` still exist (for the check that the teardown removed everything)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    return [n for n in names if n in listed]
