"""Plumbing shared by the chaos tests and `benchmarks/chaos.py`: the simulator as a process of its own, a
fleet of real `forge work` processes that can be killed, stopped and restarted, throwaway schemas and
databases, and realtime jobs to feed them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.runtime import with_database
from forge_dagster.core.store import ForgeStore, JobSpec, db
from forge_dagster.simulator.process import SimulatorProcess  # noqa: F401 (the scenarios name it)

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL")
TICKET = "ticket_triage"  # an OpenAI processor of the examples


def fresh_sim(sim, **knobs) -> None:
    """The simulator (in this process or not) with no batches, an empty log and only `knobs` set."""
    from forge_dagster.simulator import SimConfig

    sim.configure(**SimConfig().to_dict())
    sim.reset()
    if knobs:
        sim.configure(**knobs)


def worker_env(database_url: str, schema: str, sim_url: str, home: Path, **extra: str) -> dict[str, str]:
    """Environment of a `forge work` process on one schema, with the simulator's key (no real key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_") and k not in PROVIDER_ENV}
    env.update({"FORGE_DATABASE_URL": database_url, "FORGE_DB_SCHEMA": schema, "FORGE_SIMULATOR_URL": sim_url,
                "FORGE_HOME": str(home), "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """One `forge work` process; its lease owner names start with `owner_prefix`."""

    proc: subprocess.Popen
    log: Path
    stopped: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def owner_prefix(self) -> str:
        return f"{socket.gethostname()}:{self.pid}:"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self) -> dict | None:
        """The JSON line `forge work` prints when it stops (None if it never printed one)."""
        for line in reversed(self.log.with_suffix(".out").read_text().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return None


@dataclass
class Fleet:
    """`forge work` processes on one schema: start, SIGKILL, SIGSTOP/SIGCONT, stop."""

    env: dict[str, str]
    concurrency: int = 8
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="forge-chaos-logs-")))
    workers: list[WorkerProcess] = field(default_factory=list)
    retired: list[WorkerProcess] = field(default_factory=list)

    def start(self) -> WorkerProcess:
        log = self.logs / f"worker-{len(self.workers) + len(self.retired)}"
        with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "forge_dagster.cli", "work", "--processes", "1", "--concurrency",
                 str(self.concurrency)], env=self.env, cwd=ROOT, stdout=out, stderr=err)  # one worker per pid
        worker = WorkerProcess(proc, log)
        self.workers.append(worker)
        return worker

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL: no goodbye, its leases are left to expire."""
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(30)
        self.workers.remove(worker)
        self.retired.append(worker)

    def pause(self, worker: WorkerProcess) -> None:
        worker.proc.send_signal(signal.SIGSTOP)
        worker.stopped = True

    def resume(self, worker: WorkerProcess) -> None:
        worker.proc.send_signal(signal.SIGCONT)
        worker.stopped = False

    def stop_all(self, timeout_s: float = 60.0) -> None:
        """SIGTERM every live worker (SIGCONT first for a paused one) and wait for it to print its stats."""
        for w in self.workers:
            if w.stopped:
                self.resume(w)
            if w.alive():
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(10)
        self.retired += self.workers
        self.workers = []

    def errors(self) -> str:
        """Tracebacks the workers wrote, if any (for assertion messages)."""
        found = []
        for w in self.workers + self.retired:
            text = w.log.with_suffix(".err").read_text()
            if "Traceback" in text:
                found.append(f"--- worker {w.pid}\n{text[-3000:]}")
        return "\n".join(found)


@contextmanager
def store_schema(database_url: str, prefix: str = "chaos") -> Iterator[str]:
    """A fresh, migrated store schema, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    db.migrate(database_url, name)
    try:
        yield name
    finally:
        db.drop_schema(database_url, name)


@contextmanager
def own_database(server_url: str, prefix: str = "forge_chaos") -> Iterator[str]:
    """A database of its own on the server (so terminating its backends touches nobody else's); its URL.
    Dropped afterwards, with whatever sessions are still in it."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def enqueue_realtime(store: ForgeStore, n: int, *, max_attempts: int = 5, processor: str = TICKET,
                     tag: str = "rt") -> list[int]:
    """n realtime jobs of the ticket processor (ids `tag`-0...); their job ids."""
    version = load_processors()[processor].version
    specs = [JobSpec(processor, {"subject": f"Ticket {i}", "body": "The export button does nothing."},
                     external_id=f"{tag}-{i}", processor_version=version, mode="realtime",
                     max_attempts=max_attempts) for i in range(n)]
    return submit_jobs(store, specs, source="chaos").accepted


def schema_conn(database_url: str, schema: str) -> psycopg.Connection:
    """An autocommit connection in the store's schema, for reading the scenario's outcome."""
    return psycopg.connect(database_url, autocommit=True, options=f"-c search_path={schema}",
                           application_name="forge-chaos-observer")


def counts(database_url: str, schema: str) -> dict[str, int]:
    """Jobs by state, on a connection of its own (a chaos scenario may be terminating the store's)."""
    for attempt in range(20):
        try:
            with schema_conn(database_url, schema) as conn:
                return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        except psycopg.OperationalError:
            time.sleep(0.1 * (attempt + 1))
    raise RuntimeError("the database stayed unreachable")


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
