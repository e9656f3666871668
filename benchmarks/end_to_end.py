"""End to end: jobs through the Dagster batch path with the simulator answering at once.

    python -m benchmarks.end_to_end [--database-url URL] [--jobs N] [--repeat R]

A JSONL file of jobs (both example processors, OpenAI and Anthropic) is dropped in the inbox; the
pending-work and batch-status sensors and the runs they request execute in one process through Dagster
(`orchestration.InProcessDaemon`, as `forge demo` runs them), with Dagster's runs and events stored in
PostgreSQL: intake, claim, render, shape, submit, poll, collect, validate, settle. The simulator runs in
its own process with no latency and batches that end as soon as they are read, so the wall time is
Forge's and Dagster's own work (plus the simulator's, whose CPU time is reported apart). Timed from the
file drop to the last job reaching a terminal state; each repeat enqueues new jobs after one untimed
warm-up round (imports, first Dagster run) in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks._common import SPAWN, database, fresh_schema
from benchmarks.report import Row, render_table
from forge_dagster.simulator.process import SimulatorProcess

OPEN_STATES = ("pending", "claimed", "running", "submitted", "collected")
WARM_UP_JOBS = 20


def _lines(n: int, tag: str) -> str:
    out = []
    for i in range(n):
        if i % 2:
            out.append({"id": f"{tag}r{i}", "processor": "review_sentiment",
                        "input": {"review": f"Review {i}: battery lasts two days.", "rating": 1 + i % 5}})
        else:
            out.append({"id": f"{tag}t{i}", "processor": "ticket_triage",
                        "input": {"subject": f"Ticket {i}", "body": "The export button does nothing."}})
    return "".join(json.dumps(line) + "\n" for line in out)


def _drain(daemon, store, inbox: Path, n: int, tag: str, timeout_s: float) -> tuple[int, dict]:
    """Drop `n` jobs in the inbox and tick until every one has ended; returns (runs, job counts)."""
    name = f"bench-{tag}.jsonl"
    (inbox / (name + ".part")).write_text(_lines(n, tag))
    (inbox / (name + ".part")).rename(inbox / name)
    runs, deadline = 0, time.monotonic() + timeout_s
    while True:
        tick = daemon.tick()
        runs += len(tick.runs)
        failed = [r for r in tick.runs if not r[2]]
        if failed:
            raise RuntimeError(f"Dagster runs failed: {failed}")
        counts = store.jobs.counts(source=f"file:{name}")
        if sum(counts.values()) == n and not any(counts.get(s) for s in OPEN_STATES):
            return runs, counts
        if time.monotonic() > deadline:
            raise RuntimeError(f"end to end: not finished after {timeout_s} s: {counts}")
        if not tick.runs:
            time.sleep(0.05)


def _child(url: str, schema: str, dagster_url: str, sim_url: str, home: str, jobs: int, repeat: int, events) -> None:
    """One process, as `forge demo` is: Dagster on PostgreSQL, the sensors and runs executed in-process."""
    try:
        os.environ.update(FORGE_HOME=home, FORGE_DATABASE_URL=url, FORGE_DB_SCHEMA=schema,
                          DAGSTER_HOME=str(Path(home) / "dagster"))
        import dagster as dg

        from forge_dagster.core.runtime import write_dagster_yaml
        from forge_dagster.definitions import build_definitions
        from forge_dagster.orchestration import InProcessDaemon
        from forge_dagster.resources.lease_store import LeaseStoreResource
        from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
        from forge_dagster.resources.provider_keys import ProviderKeysResource

        write_dagster_yaml(Path(home) / "dagster", dagster_url)
        lease_store = LeaseStoreResource(database_url=url, db_schema=schema)
        defs = build_definitions({"lease_store": lease_store, "processors": ProcessorCatalogResource(),
                                  "provider_keys": ProviderKeysResource(simulator_url=sim_url)})
        daemon = InProcessDaemon(defs, dg.DagsterInstance.get(), ["pending_work_sensor", "batch_status_sensor"],
                                 run_config=lambda job: {"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        inbox = Path(home) / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        store = lease_store.store
        _drain(daemon, store, inbox, WARM_UP_JOBS, "warm", 300)
        for r in range(repeat):
            events.put(("go", r))
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            runs, counts = _drain(daemon, store, inbox, jobs, f"r{r}", 1800)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu_s = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
            events.put(("done", {"seconds": seconds, "cpu_s": cpu_s, "runs": runs, "jobs": counts}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        import traceback

        events.put(("error", f"{exc!r}\n{traceback.format_exc()}"))


def _dagster_database(url: str):
    """A database of its own for Dagster's runs and events, dropped afterwards."""
    from contextlib import contextmanager

    from forge_dagster.core.runtime import with_database

    @contextmanager
    def scope():
        name = f"forge_bench_dagster_{secrets.token_hex(3)}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_database(url, name)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    return scope()


def rows(url: str, *, jobs: int, repeat: int) -> list[Row]:
    samples, details = [], []
    with fresh_schema(url, "e2e") as schema, _dagster_database(url) as dagster_url, SimulatorProcess() as sim, \
            tempfile.TemporaryDirectory() as home:
        from forge_dagster.core.store import db

        db.migrate(url, schema)
        sim.reset()  # no latency, batches end when first read, no faults
        events = SPAWN.Queue()
        child = SPAWN.Process(target=_child, args=(url, schema, dagster_url, sim.url, home, jobs, repeat, events),
                              daemon=True)
        child.start()
        try:
            for _ in range(repeat):
                kind, value = events.get(timeout=1800)
                if kind == "error":
                    raise RuntimeError(f"end-to-end child failed:\n{value}")
                sim_cpu = sim.cpu_seconds()
                kind, value = events.get(timeout=1800)
                if kind == "error":
                    raise RuntimeError(f"end-to-end child failed:\n{value}")
                value["sim_cpu_s"] = sim.cpu_seconds() - sim_cpu
                if value["jobs"].get("succeeded") != jobs:
                    raise RuntimeError(f"end to end: {value['jobs']}, expected {jobs} succeeded")
                samples.append(value["seconds"])
                details.append(value)
        finally:
            child.join(timeout=60)
            if child.is_alive():
                child.terminate()

    def median_of(key: str) -> float:
        return sorted(d[key] for d in details)[len(details) // 2]

    return [Row("end to end", "forge batch path via Dagster",
                f"{jobs:,} jobs (2 processors, OpenAI + Anthropic) from inbox file to terminal state through the "
                "sensors and asset runs, Dagster storage on PostgreSQL, simulator answering at once", "s", samples,
                details={"overhead ms/job": round(1000 * median_of("seconds") / jobs, 2),
                         "CPU ms/job (Forge+Dagster process)": round(1000 * median_of("cpu_s") / jobs, 2),
                         "simulator CPU ms/job": round(1000 * median_of("sim_cpu_s") / jobs, 2),
                         "Dagster runs": int(median_of("runs"))})]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with database(args.database_url) as (url, _):
        print(render_table(rows(url, jobs=args.jobs, repeat=args.repeat)))


if __name__ == "__main__":
    main()
