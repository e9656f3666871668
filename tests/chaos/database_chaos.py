"""Database chaos: `forge work` processes while PostgreSQL misbehaves under them.

- terminations: every backend of Forge's database is terminated (`pg_terminate_backend`) once a second
  for a while; the workers must reconnect, lose nothing, and get their throughput back afterwards;
- restart (benchmark, on a PostgreSQL the benchmark started itself): the server restarts mid-run;
- held xmin: a transaction holding a snapshot and a transaction id stays open through a whole run; jobs
  must still finish (dead rows pile up: it may slow down, never stop). The slowdown is the figure.
Forge runs in a database of its own here, so the terminations reach nobody else's sessions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from forge_dagster.core.store import ForgeStore, db
from tests.chaos import conservation
from tests.chaos.harness import (
    Fleet,
    SimulatorProcess,
    counts,
    enqueue_realtime,
    fresh_sim,
    schema_conn,
    worker_env,
)

OBSERVER = "forge-chaos-observer"  # harness.schema_conn's application_name: never terminated


@dataclass
class DatabaseChaosReport:
    scenario: str
    jobs: int
    elapsed_s: float = 0.0
    terminated: int = 0  # backends terminated
    restarts: int = 0
    rate_during: float | None = None  # jobs/s while the chaos lasted
    rate_after: float | None = None  # jobs/s once it stopped
    first_finish_after_restart_s: float | None = None
    baseline_s: float | None = None  # held xmin: the same run without the open transaction (set by caller)
    workers_exited: int = 0  # worker processes that died on their own during the run (replaced)
    unclean_stops: list[int] = field(default_factory=list)  # exit codes of workers SIGTERM did not stop cleanly
    conservation: conservation.Conservation | None = None
    worker_errors: str = ""
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict:
        c = self.conservation
        slowdown = (round(self.elapsed_s / self.baseline_s, 2) if self.baseline_s else None)
        return {"scenario": self.scenario, "jobs": self.jobs, "lost": len(c.open_jobs),
                "duplicates accepted": len(c.accepted_twice), "stale accepted": len(c.stale_transitions),
                "terminated backends": self.terminated, "restarts": self.restarts,
                "jobs/s during": _r(self.rate_during), "jobs/s after": _r(self.rate_after),
                "first finish after restart s": _r(self.first_finish_after_restart_s),
                "elapsed s": _r(self.elapsed_s), "slowdown x": slowdown, "workers exited": self.workers_exited,
                "unclean stops": ",".join(map(str, self.unclean_stops)) or "none"}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def terminate_backends(admin_url: str, database: str) -> int:
    """Terminate every session in `database` but the chaos observer's; how many were terminated (0 while
    the server cannot be reached, e.g. restarting)."""
    try:
        conn = psycopg.connect(admin_url, autocommit=True)
    except psycopg.OperationalError:
        return 0
    with conn:
        return conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND application_name <> %s",
            (database, OBSERVER)).fetchone()[0]


class _Terminator(threading.Thread):
    """Terminates Forge's sessions every `every_s` until stopped."""

    def __init__(self, admin_url: str, database: str, every_s: float) -> None:
        super().__init__(name="chaos-terminator", daemon=True)
        self.admin_url, self.database, self.every_s = admin_url, database, every_s
        self.stopped, self.terminated = threading.Event(), 0

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.terminated += terminate_backends(self.admin_url, self.database)


def _finished(url: str, schema: str) -> int:
    return sum(n for state, n in counts(url, schema).items() if state in conservation.TERMINAL)


def _supervise(fleet: Fleet) -> None:
    """As a service manager would: a worker that died on its own is replaced (and counted at the end)."""
    for w in list(fleet.workers):
        if not w.alive():
            fleet.workers.remove(w)
            fleet.retired.append(w)
            fleet.start()


def _wait_done(url: str, schema: str, fleet: Fleet, deadline: float, on_tick: Callable[[], None] = lambda: None,
               ) -> None:
    while time.monotonic() < deadline:
        if not any(counts(url, schema).get(s) for s in conservation.OPEN):
            return
        _supervise(fleet)
        on_tick()
        time.sleep(0.1)


def _finish(report: DatabaseChaosReport, url: str, schema: str, fleet: Fleet) -> DatabaseChaosReport:
    died = list(fleet.retired)  # replaced by _supervise while the run went on
    fleet.stop_all()
    report.workers_exited = sum(1 for w in died if w.proc.returncode not in (0, -15))
    report.unclean_stops = [w.proc.returncode for w in fleet.retired[len(died):] if w.proc.returncode not in (0, -15)]
    with schema_conn(url, schema) as conn:
        report.conservation = conservation.check(conn)
    report.worker_errors = fleet.errors()
    return report


def _start(url: str, schema: str, sim: SimulatorProcess, home: Path, jobs: int, workers: int, concurrency: int,
           lease_ttl_s: float, latency_ms: int) -> Fleet:
    """Migrate `schema`, enqueue the jobs and start the fleet; returns once a first job has finished."""
    fresh_sim(sim, latency_ms=latency_ms)
    db.migrate(url, schema)
    with ForgeStore(url, schema, pool_size=2, application_name=OBSERVER) as store:
        enqueue_realtime(store, jobs)
    fleet = Fleet(worker_env(url, schema, sim.url, home, FORGE_LEASE_TTL_S=str(lease_ttl_s)), concurrency)
    for _ in range(workers):
        fleet.start()
    deadline = time.monotonic() + 120  # processes start slowly on a loaded machine
    while not _finished(url, schema) and time.monotonic() < deadline:
        time.sleep(0.05)
    return fleet


def run_terminations(
    admin_url: str, url: str, schema: str, sim: SimulatorProcess, home: Path, *, jobs: int, workers: int,
    concurrency: int, chaos_s: float, every_s: float = 1.0, lease_ttl_s: float = 3.0, latency_ms: int = 100,
    restart: Callable[[], None] | None = None, timeout_s: float = 180.0,
) -> DatabaseChaosReport:
    """Terminate every session of Forge's database every `every_s` for `chaos_s` once the fleet works
    (and, with `restart`, restart the server halfway through), then let the run finish. `url` is Forge's
    database (its own: every session in it is terminated), `admin_url` another database to act from."""
    report = DatabaseChaosReport("pg_terminate_backend" + (" + restart" if restart else ""), jobs)
    database = conninfo_to_dict(url)["dbname"]
    fleet = _start(url, schema, sim, home, jobs, workers, concurrency, lease_ttl_s, latency_ms)
    try:
        started, done_before = time.monotonic(), _finished(url, schema)
        terminator = _Terminator(admin_url, database, every_s)
        terminator.start()
        restarted_at, done_at_restart = None, 0

        def note_first_finish() -> None:
            if restarted_at is not None and report.first_finish_after_restart_s is None \
                    and _finished(url, schema) > done_at_restart:
                report.first_finish_after_restart_s = time.monotonic() - restarted_at

        while time.monotonic() - started < chaos_s:
            if restart is not None and restarted_at is None and time.monotonic() - started >= chaos_s / 2:
                done_at_restart = _finished(url, schema)
                restart()
                restarted_at, report.restarts = time.monotonic(), 1
            note_first_finish()
            _supervise(fleet)
            time.sleep(0.1)
        terminator.stopped.set()
        terminator.join()
        report.terminated = terminator.terminated
        chaos_end, done_during = time.monotonic(), _finished(url, schema)
        report.rate_during = (done_during - done_before) / (chaos_end - started)
        _wait_done(url, schema, fleet, chaos_end + timeout_s, note_first_finish)
        report.elapsed_s = time.monotonic() - started
        after = time.monotonic() - chaos_end
        report.rate_after = (_finished(url, schema) - done_during) / after if after > 0.5 else None
    finally:
        _finish(report, url, schema, fleet)
    return report


def run_held_xmin(
    url: str, schema: str, sim: SimulatorProcess, home: Path, *, jobs: int, workers: int, concurrency: int,
    hold: bool = True, lease_ttl_s: float = 5.0, latency_ms: int = 20, timeout_s: float = 300.0,
) -> DatabaseChaosReport:
    """Run `jobs` while (with `hold`) another session keeps a snapshot and a transaction id open from the
    start to the end; `elapsed_s` runs from the first finished job to the last. Without `hold`: the
    baseline the slowdown is measured against."""
    report = DatabaseChaosReport("held xmin" if hold else "baseline (nothing held)", jobs)
    with psycopg.connect(url, application_name=OBSERVER) as holder:
        if hold:
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT pg_current_xact_id(), count(*) FROM pg_class")  # snapshot + xid, held
        fleet = _start(url, schema, sim, home, jobs, workers, concurrency, lease_ttl_s, latency_ms)
        try:
            started = time.monotonic()
            _wait_done(url, schema, fleet, started + timeout_s)
            report.elapsed_s = time.monotonic() - started
            if hold:
                with psycopg.connect(url, application_name=OBSERVER) as conn:
                    xmin = conn.execute("SELECT backend_xmin FROM pg_stat_activity WHERE pid = %s",
                                        (holder.info.backend_pid,)).fetchone()[0]
                report.notes.append(f"xmin held to the end: {xmin is not None}")
        finally:
            holder.rollback()
            _finish(report, url, schema, fleet)
    return report
