"""Forge across hosts on one machine (tests/deploy/netns.py): host A runs PostgreSQL, Redis and the provider
simulator on its own address; B the Dagster webserver and daemon; C Forge's code server (`dagster
code-server start`, whose runs execute on C) and `forge work` processes; D more `forge work` processes.

Each host has a FORGE_HOME and DAGSTER_HOME of its own: hosts share the network and nothing else. The
operator here (the test, in the root namespace) reaches PostgreSQL through its unix socket only, as one
would on host A; every Forge process reaches it over TCP at A's address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from forge_dagster.core.runtime import ensure_database, write_dagster_yaml
from tests.deploy.netns import Host, Network, leftover_namespaces
from tests.helpers import wait_until as wait_for

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT, REDIS_PORT, SIM_PORT, CODE_PORT, WEB_PORT = 5432, 6379, 8700, 4000, 3000
HOSTS = ["host-a", "host-b", "host-c", "host-d"]
BIN = Path(sys.executable).parent  # the console scripts a deployment runs: forge, dagster, dagster-daemon, ...
PROVIDER_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")


@dataclass
class Worker:
    """One `forge work` process on a host."""

    host: Host
    label: str
    proc: subprocess.Popen

    @property
    def owner_prefix(self) -> str:
        return f"{self.host.name}:{self.proc.pid}:"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self) -> dict | None:
        """The JSON line `forge work` printed when it stopped (None if it never did)."""
        for line in reversed((self.host.logs / f"{self.label}.out").read_text().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return None


@dataclass
class Cluster:
    """The four hosts and what runs on them; `close()` tears everything down."""

    net: Network
    root: Path
    lease_ttl_s: float
    dagster: bool
    workers: list[Worker] = field(default_factory=list)
    retired: list[Worker] = field(default_factory=list)

    # -- addresses -------------------------------------------------------------------------------
    @property
    def a(self) -> Host:
        return self.net.hosts["host-a"]

    @property
    def pg_socket_dir(self) -> Path:
        return self.root / "pg-socket"

    @property
    def local_url(self) -> str:
        """The operator's URL: the server's unix socket (no network on the way)."""
        return f"postgresql://postgres@/forge?host={self.pg_socket_dir}&port={PG_PORT}"

    def tcp_url(self, database: str = "forge") -> str:
        """What every Forge process uses: host A's address."""
        return f"postgresql://postgres@{self.a.address}:{PG_PORT}/{database}"

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """The environment of a Forge process on `host`: its own homes, A's services, the simulator's key."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FORGE_", "DAGSTER_")) and k not in PROVIDER_ENV}
        home = self.root / host.name
        env.update({"FORGE_DATABASE_URL": self.tcp_url(), "FORGE_REDIS_URL": f"redis://{self.a.address}:{REDIS_PORT}/0",
                    "FORGE_SIMULATOR_URL": f"http://{self.a.address}:{SIM_PORT}", "FORGE_HOME": str(home),
                    "DAGSTER_HOME": str(home / "dagster"), "PYTHONPATH": str(ROOT),
                    "FORGE_LEASE_TTL_S": f"{self.lease_ttl_s:g}", "FORGE_RUN_LEASE_TTL_S": f"{self.lease_ttl_s:g}",
                    "FORGE_SENSOR_INTERVAL_S": "2", "FORGE_RUN_RETRY_DELAY_S": "2",
                    "FORGE_RUN_STEP_HANDOVER_S": f"{6 * self.lease_ttl_s:g}"})
        env.update(extra)
        return env

    # -- host A ----------------------------------------------------------------------------------
    def start_services(self, *, latency_ms: int, batch_processing_s: float) -> None:
        """PostgreSQL 15, Redis and the simulator on host A's address; the `forge` and `dagster` databases."""
        a, data = self.a, self.root / "pg-data"
        for d in (data, self.pg_socket_dir):
            d.mkdir(mode=0o700)
            shutil.chown(d, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True)
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.net.subnet}.0/24 trust\n")
        a.start("postgres", [str(PG_BIN / "postgres"), "-D", str(data), "-c", f"listen_addresses={a.address}",
                             "-c", f"port={PG_PORT}", "-c", f"unix_socket_directories={self.pg_socket_dir}",
                             "-c", "max_connections=300"], self.env(a), user="postgres")
        wait_for(self._pg_answers, timeout_s=60, what="PostgreSQL on host A")
        server = self.local_url.replace("/forge?", "/postgres?")
        ensure_database(server, "forge")
        ensure_database(server, "dagster")
        a.start("redis", ["redis-server", "--bind", a.address, "--port", str(REDIS_PORT), "--save", "", "--protected-mode", "no",
                          "--appendonly", "no"], self.env(a))
        a.start("simulator", [sys.executable, "-m", "forge_dagster.simulator", "--host", a.address, "--port",
                              str(SIM_PORT), "--latency-ms", str(latency_ms), "--batch-processing-s",
                              f"{batch_processing_s:g}"], self.env(a), cwd=ROOT)

    def _pg_answers(self) -> bool:
        try:
            psycopg.connect(self.local_url.replace("/forge?", "/postgres?"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    # -- hosts B and C: Dagster ------------------------------------------------------------------
    def start_dagster(self) -> None:
        """Forge's code location as a gRPC code server on C; the webserver and the daemon on B, loading it
        over the network (workspace.yaml names C's address)."""
        b, c = self.net.hosts["host-b"], self.net.hosts["host-c"]
        for host in (b, c):
            home = self.root / host.name / "dagster"
            write_dagster_yaml(home, self.tcp_url("dagster"), run_queue=True)
            (home / "workspace.yaml").write_text(
                "load_from:\n  - grpc_server:\n"
                f"      host: {c.address}\n      port: {CODE_PORT}\n      location_name: forge\n")
        # Dagster's storage schema once, before three processes start on it together.
        b.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().dispose()"],
              self.env(b), timeout_s=300).check_returncode()
        c.start("code-server", [str(BIN / "dagster"), "code-server", "start", "-h", c.address, "-p",
                                str(CODE_PORT), "-m", "forge_dagster.definitions", "--location-name", "forge"],
                self.env(c), cwd=ROOT)
        workspace = str(self.root / "host-b" / "dagster" / "workspace.yaml")
        b.start("webserver", [str(BIN / "dagster-webserver"), "-h", b.address, "-p", str(WEB_PORT),
                              "-w", workspace], self.env(b), cwd=ROOT)
        b.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], self.env(b),
                cwd=ROOT)

    # -- hosts C and D: workers ------------------------------------------------------------------
    def start_worker(self, host_name: str, concurrency: int) -> Worker:
        host = self.net.hosts[host_name]
        label = f"work-{host_name}-{sum(w.host is host for w in self.workers + self.retired)}"
        proc = host.start(label, [str(BIN / "forge"), "work", "--processes", "1", "--concurrency",
                                  str(concurrency)], self.env(host), cwd=ROOT)  # one worker per pid
        worker = Worker(host, label, proc)
        self.workers.append(worker)
        return worker

    def on(self, host_name: str) -> list[Worker]:
        return [w for w in self.workers if w.host.name == host_name]

    def kill(self, worker: Worker) -> None:
        """SIGKILL: the host's process dies with no goodbye, its leases left to expire."""
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(30)
        self.workers.remove(worker)
        self.retired.append(worker)

    def stop_workers(self, host_name: str | None = None, timeout_s: float = 120.0) -> None:
        """SIGTERM the workers (of one host, or all) and wait for each to print its stats."""
        chosen = [w for w in self.workers if host_name is None or w.host.name == host_name]
        for w in chosen:
            if w.alive():
                w.proc.send_signal(signal.SIGTERM)
        for w in chosen:
            try:
                w.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(10)
            self.workers.remove(w)
            self.retired.append(w)

    def health(self, host_name: str, skip: tuple[str, ...] = ()) -> tuple[int, dict]:
        """`forge health --json` on a host (providers, Ollama and `skip` left out): its exit code and report."""
        host = self.net.hosts[host_name]
        skips = [arg for check in ("providers", "ollama", *skip) for arg in ("--skip", check)]
        done = host.run([str(BIN / "forge"), "health", "--json", *skips], self.env(host))
        return done.returncode, json.loads(done.stdout or "{}")

    def errors(self) -> str:
        """Tracebacks the workers wrote (for assertion messages)."""
        found = []
        for w in self.workers + self.retired:
            text = (w.host.logs / f"{w.label}.err").read_text()
            if "Traceback" in text:
                found.append(f"--- {w.label} ({w.proc.pid})\n{text[-3000:]}")
        return "\n".join(found)

    def close(self, *, keep_logs: bool = False) -> list[str]:
        """Tear everything down (the logs stay when `keep_logs`, for a failure's message); the namespaces
        still there afterwards (none, if all went well)."""
        names = self.net.namespaces()
        self.net.teardown()
        for path in self.root.iterdir():
            if not (keep_logs and path.name == "logs"):
                shutil.rmtree(path, ignore_errors=True)
        if not keep_logs:
            self.root.rmdir()
        return leftover_namespaces(names)


def open_cluster(*, lease_ttl_s: float, latency_ms: int = 100, batch_processing_s: float = 2.0,
                 dagster: bool = True, subnet: str = "10.231.0") -> Cluster:
    """Build the four hosts and start A's services (and B's and C's Dagster when `dagster`)."""
    root = Path(tempfile.mkdtemp(prefix="forge-multihost-"))
    os.chmod(root, 0o755)  # the postgres user walks into its data directory
    logs = root / "logs"
    logs.mkdir()
    net = Network.build(HOSTS, logs, subnet=subnet)
    cluster = Cluster(net, root, lease_ttl_s, dagster)
    try:
        cluster.start_services(latency_ms=latency_ms, batch_processing_s=batch_processing_s)
        if dagster:
            cluster.start_dagster()
    except BaseException:
        cluster.close()
        raise
    return cluster


