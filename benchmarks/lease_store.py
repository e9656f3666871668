"""Lease-store throughput: how close Forge's claim -> complete loop gets to what PostgreSQL itself can do,
and how it compares with procrastinate and pgqueuer draining the same number of no-op jobs.

    python -m benchmarks.lease_store [--database-url URL] [--jobs N] [--jobs-single N] [--repeat R]

Measured on one server, each system in a fresh schema that is dropped afterwards:
1. the ceiling: pgbench running job_sql.CLAIM_JOBS then job_sql.SUCCEED_JOBS (generated from the store's own
   SQL, parameters as literals, k as a `\\set` variable, prepared statements as psycopg uses after five
   executions) over a pre-filled jobs table, 1 and 4 clients; jobs/s = transactions/s x k;
2. Forge: 1 and 4 worker processes, each with its own ForgeStore, looping claim(k) -> succeed_many(all k)
   (each success writes its accepted output, which the store checks: fail closed costs what it costs);
3. procrastinate and pgqueuer (queue_peers.py): their own tables, 4 worker processes, a no-op task, drained.
Every repeat re-fills the table (TRUNCATE, COPY, ANALYZE), times from the release of the already-connected
workers to the last one finding the queue empty, and checks that every job succeeded.
Commits and WAL bytes per job come from one more, untimed drain per cell by workers that connect for it and
disconnect after it (so their statistics are flushed): the deltas of pg_stat_database.xact_commit and
pg_current_wal_lsn() around it. They are server-wide: on a shared server other sessions add to them.
Peers are compared with Forge like for like: pgqueuer (batch 10, 4 processes) with Forge at k=10 and 4
workers, procrastinate (one job per fetch, 4 processes) with Forge at k=1 and 4 workers.
Cells that move one job per statement (k=1, procrastinate) drain --jobs-single jobs: each of those jobs costs
two commits, so on a disk with millisecond fsync they would otherwise dominate the run. The defaults
(5,000 / 500 jobs, 3 repeats) take two to three minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks._common import (
    SESSIONS_EXIT_S,
    Cell,
    Usage,
    WorkerGroup,
    child_main,
    counters,
    database,
    drain_usage,
    find_pgbench,
    flush_stats,
    fresh_schema,
    libpq_env,
    render_table,
    server_settings,
    server_version,
    usage_between,
)
from benchmarks.queue_peers import PEER_WORKERS, PGQUEUER_BATCH, measure_pgqueuer, measure_procrastinate
from benchmarks.report import Ratio, Row
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.registry import register_processors
from forge_dagster.core.platform.validation import accepted_output, validate_output
from forge_dagster.core.runtime import redact_url
from forge_dagster.core.store import ForgeStore, JobSpec, job_sql

KS = (1, 10, 100)
WORKERS = (1, 4)
LEASE_TTL_S = 30.0
# The no-op job: a step whose handler answers `{}`, accepted as every output must be before a job succeeds.
BENCH = Processor(name="bench", version="1.0.0", handler="benchmarks.lease_store:noop")
NOOP_ACCEPTED = accepted_output(validate_output(BENCH, {}), BENCH, "benchmark")


def noop(job) -> dict:
    """The benchmark's handler: nothing to do."""
    return {}

RESULTS = Path(__file__).parent / "results" / "lease_store.json"


# -- the lease store ------------------------------------------------------------------------------
def refill(store: ForgeStore, n: int) -> None:
    """Empty the jobs table and enqueue `n` pending no-op jobs (one COPY), then ANALYZE it."""
    with store.transaction() as conn:
        conn.execute("TRUNCATE jobs, job_events, accepted_outputs RESTART IDENTITY")
    register_processors(store, [(BENCH, "benchmark")])
    submit_jobs(store, [JobSpec("bench", {"i": i}, external_id=f"b{i}") for i in range(n)])
    with store.transaction() as conn:
        conn.execute("ANALYZE jobs")
    with store.transaction() as conn:
        flush_stats(conn)  # the refill's commits are counted before a drain, not during it


def check_succeeded(store: ForgeStore, expected: int) -> None:
    counts = store.jobs.counts()
    if counts.get("succeeded", 0) != expected or counts.get("running", 0):
        raise RuntimeError(f"expected {expected} succeeded jobs, found {counts}")


# -- 1. the ceiling: pgbench on the store's own SQL -----------------------------------------------
def _with_literals(text: str, values: dict[str, str]) -> str:
    """Replace each %(name)s placeholder with a literal; an unknown placeholder is an error, so the script
    cannot silently drift from the store's SQL."""

    def literal(match: re.Match) -> str:
        if match.group(1) not in values:
            raise KeyError(f"no literal for placeholder {match.group(1)!r}")
        return values[match.group(1)]

    return re.sub(r"%\((\w+)\)s", literal, text).strip()


def pgbench_script(k: int) -> str:
    """One transaction of the ceiling: CLAIM_JOBS (its final SELECT aggregated into :ids and :tokens with
    \\gset), then SUCCEED_JOBS on those leases with accepted `{}` outputs, as the no-op Forge worker does."""
    claim_ctes, _ = job_sql.CLAIM_JOBS.rsplit("\nSELECT ", 1)
    claim = _with_literals(claim_ctes, {"k": ":k", "mode": "'handler'", "to_state": "'running'",
                                        "owner": "'pgbench'", "ttl": str(LEASE_TTL_S), "pins": "NULL"})
    n = "ARRAY[cardinality(:ids::bigint[])]"
    a = NOOP_ACCEPTED
    finish = _with_literals(job_sql.SUCCEED_JOBS, {
        "ids": ":ids", "tokens": ":tokens", "outputs": f"array_fill('{{}}'::jsonb, {n})",
        "processors": f"array_fill('{a.processor}'::text, {n})",
        "versions": f"array_fill('{a.processor_version}'::text, {n})",
        "fingerprints": f"array_fill('{a.fingerprint}'::text, {n})",
        "accepted_by": f"array_fill('{a.accepted_by}'::text, {n})",
        "reason": "'validated'", "from_state": "'running'", "actor": "'pgbench'",
    })
    collect = "SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(lease_token), '{}') AS tokens"
    return f"\\set k {k}\n{claim}\n{collect} FROM claimed\n\\gset\n{finish};\n"


def ceiling_round(pgbench: str, script: Path, url: str, store: ForgeStore, k: int, clients: int,
                  jobs: int) -> tuple[float, Usage]:
    """Fill the table, let pgbench claim and finish (almost) all of it; return jobs/s = tps x k, and the
    commits and WAL of the run (pgbench's sessions end with it, so this round needs no extra drain)."""
    per_client = max(1, jobs // (k * clients))
    refill(store, jobs)
    cmd = [pgbench, "-n", "-M", "prepared", "-f", str(script), "-c", str(clients), "-j", str(clients),
           "-t", str(per_client)]
    before = counters(url)
    run = subprocess.run(cmd, env=libpq_env(url, store.schema), capture_output=True, text=True, timeout=600)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", run.stdout)
    if run.returncode or not tps:
        raise RuntimeError(f"pgbench failed ({run.returncode}):\n{run.stderr[-2000:]}")
    time.sleep(SESSIONS_EXIT_S)
    usage = usage_between(before, counters(url), per_client * k * clients)
    check_succeeded(store, per_client * k * clients)
    return float(tps.group(1)) * k, usage


# -- 2. Forge: ForgeStore in worker processes ------------------------------------------------------
def _forge_worker(url: str, schema: str, events, commands) -> None:
    """A worker process with its own ForgeStore; each round drains the queue with claim(k) -> succeed_many."""

    def prepare():
        store = ForgeStore(url, schema, pool_size=2, lease_ttl_s=LEASE_TTL_S)

        def work(k: int) -> int:
            done = 0
            while jobs := store.jobs.claim(k, mode="handler"):
                done += len(store.jobs.succeed_many([(job, NOOP_ACCEPTED) for job in jobs]))
            return done

        return work, store.close

    child_main(prepare, events, commands)


def forge_round(group: WorkerGroup, store: ForgeStore, k: int, jobs: int) -> float:
    refill(store, jobs)
    seconds, done = group.round(k)
    check_succeeded(store, jobs)
    if done != jobs:
        raise RuntimeError(f"workers report {done} jobs finished, expected {jobs}")
    return jobs / seconds


def measure_lease_store(url: str, jobs: dict[int, int], repeat: int, pgbench: str, account: bool) -> list[Cell]:
    """Ceiling and Forge for every k and worker count; their repeats alternate so both see the same load."""
    cells = []
    with fresh_schema(url, "ceiling") as ceiling_schema, fresh_schema(url, "forge") as forge_schema, \
            ForgeStore(url, ceiling_schema, pool_size=1) as ceiling_store, \
            ForgeStore(url, forge_schema, pool_size=1) as forge_store, \
            tempfile.TemporaryDirectory() as tmp:
        ceiling_store.migrate()
        forge_store.migrate()
        for workers in WORKERS:
            with WorkerGroup(_forge_worker, (url, forge_schema), workers) as group:
                for k in KS:
                    script = Path(tmp) / f"claim_finish_k{k}.sql"
                    script.write_text(pgbench_script(k))
                    ceiling = Cell("ceiling (pgbench)", k, workers, note="store SQL in pgbench, no client library")
                    forge = Cell("forge (ForgeStore)", k, workers, note="claim(k) -> succeed_many, process/worker")
                    for _ in range(repeat):
                        rate, ceiling.usage = ceiling_round(pgbench, script, url, ceiling_store, k, workers, jobs[k])
                        ceiling.samples.append(rate)
                        forge.samples.append(forge_round(group, forge_store, k, jobs[k]))
                    if account:
                        refill(forge_store, jobs[k])
                        forge.usage = drain_usage(url, WorkerGroup(_forge_worker, (url, forge_schema), workers),
                                                  k, jobs[k])
                        check_succeeded(forge_store, jobs[k])
                    cells += [ceiling, forge]
                    print(f"  k={k:<3} workers={workers}: ceiling {ceiling.median:,.0f}/s, "
                          f"forge {forge.median:,.0f}/s ({jobs[k]:,} jobs)", flush=True)
    return cells


# -- the run --------------------------------------------------------------------------------------
# Each peer beside the Forge cell that moves jobs the same way: as many jobs per fetch, as many processes.
LIKE_FOR_LIKE = {"pgqueuer": (PGQUEUER_BATCH, PEER_WORKERS), "procrastinate": (1, PEER_WORKERS)}


def _forge_cell(cells: list[Cell], k: int, workers: int) -> Cell | None:
    return next((c for c in cells if c.system.startswith("forge") and (c.k, c.workers) == (k, workers)), None)


def summary_line(cells: list[Cell]) -> tuple[str, dict]:
    """Forge beside each peer, like for like (same jobs per fetch, same number of worker processes)."""
    parts, ratios = [], {}
    for peer in (c for c in cells if c.system in LIKE_FOR_LIKE):
        forge = _forge_cell(cells, *LIKE_FOR_LIKE[peer.system])
        if forge is None:
            continue
        ratios[peer.system] = {"forge_k": forge.k, "workers": forge.workers,
                               "ratio": round(forge.median / peer.median, 2)}
        parts.append(f"{forge.median / peer.median:.2f}x {peer.system} at k={forge.k}, {forge.workers} workers "
                     f"({forge.median:,.0f}/s vs {peer.median:,.0f}/s)")
    return "Forge like for like: " + "; ".join(parts), {"forge_over_peer_like_for_like": ratios}


def as_rows(cells: list[Cell]) -> list[Row]:
    """The cells as rows of the combined table: each Forge cell against the ceiling at its k and worker
    count (and against the peer that fetches as many jobs with as many processes)."""
    by_key = {(c.system, c.k, c.workers): c for c in cells}
    rows = []
    for c in cells:
        details = ({"commits/job": round(c.usage.commits_per_job, 2), "WAL B/job": round(c.usage.wal_bytes_per_job)}
                   if c.usage else {})
        ratios = []
        ceiling = by_key.get(("ceiling (pgbench)", c.k, c.workers))
        if c.system.startswith("forge") and ceiling:
            ratios.append(Ratio.paired(f"pgbench ceiling k={c.k} {c.workers}w", c.samples, ceiling.samples))
            for peer, key in LIKE_FOR_LIKE.items():
                if key == (c.k, c.workers) and (peer_cell := next((x for x in cells if x.system == peer), None)):
                    ratios.append(Ratio.unpaired(peer, c.samples, peer_cell.samples))
        elif not c.system.startswith("ceiling") and ceiling:
            ratios.append(Ratio.unpaired(f"pgbench ceiling k={c.k} {c.workers}w", c.samples, ceiling.samples))
        what = {"ceiling (pgbench)": f"the store's claim + finish SQL in pgbench, k={c.k}, {c.workers} clients",
                "forge (ForgeStore)": f"ForgeStore.claim(k={c.k}) -> succeed_many, {c.workers} worker processes"}
        label = {"ceiling (pgbench)": f"pgbench ceiling k={c.k} {c.workers}w",
                 "forge (ForgeStore)": f"forge k={c.k} {c.workers}w"}.get(c.system, c.system)
        rows.append(Row("lease store", label, (what.get(c.system) or c.note) + ": no-op jobs drained", "jobs/s",
                        c.samples, ratios, details))
    return rows


def run(url: str, mode: str, jobs: int, jobs_single: int, repeat: int, peers: bool, account: bool = True) -> dict:
    """Measure every cell, print the table and the summary line; return the JSON report (its `cells` are
    the Cell objects, for the combined table)."""
    pgbench = find_pgbench()
    started = time.perf_counter()
    version = server_version(url)
    per_k = {k: jobs_single if k == 1 else jobs for k in KS}
    print(f"lease-store benchmark: {mode} PostgreSQL {version} at {redact_url(url)}; {jobs:,} jobs per cell "
          f"({jobs_single:,} at one job per statement), median of {repeat}", flush=True)
    cells = measure_lease_store(url, per_k, repeat, pgbench, account)
    if peers:
        cells.append(measure_procrastinate(url, jobs_single, repeat, account))
        print(f"  procrastinate: {cells[-1].median:,.0f}/s ({jobs_single:,} jobs)", flush=True)
        cells.append(measure_pgqueuer(url, jobs, repeat, account))
        print(f"  pgqueuer: {cells[-1].median:,.0f}/s ({jobs:,} jobs)", flush=True)
    ceilings = {(c.k, c.workers): c.median for c in cells if c.system.startswith("ceiling")}
    for c in cells:
        if not c.system.startswith("ceiling"):
            c.ratio = c.median / ceilings[(c.k, c.workers)] if (c.k, c.workers) in ceilings else None
    order = {"ceiling (pgbench)": 0, "forge (ForgeStore)": 1}
    cells.sort(key=lambda c: (c.system not in order, c.k if c.system in order else 0, c.workers,
                              order.get(c.system, 0)))
    line, summary = summary_line(cells) if peers else ("", {})
    print("\n" + render_table(cells) + ("\n" + line if line else ""))
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": {"mode": mode, "url": redact_url(url), **server_settings(url)},
        "pgbench": subprocess.run([pgbench, "--version"], capture_output=True, text=True).stdout.strip(),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "jobs_per_cell": {str(k): n for k, n in per_k.items()}, "repeat": repeat,
        "seconds": round(time.perf_counter() - started, 1),
        "results": [c.as_dict() for c in cells], "summary": summary, "cells": cells,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: FORGE_DATABASE_URL, FORGE_TEST_DATABASE_URL, "
                                               "else an embedded PostgreSQL in a temporary directory")
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per cell (default 5000)")
    parser.add_argument("--jobs-single", type=int, default=500,
                        help="jobs per cell that moves one job per statement: k=1 and procrastinate (default 500)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per cell; the median is reported")
    parser.add_argument("--no-peers", action="store_true", help="skip procrastinate and pgqueuer")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    with database(args.database_url) as (url, mode):
        report = run(url, mode, args.jobs, args.jobs_single, args.repeat, peers=not args.no_peers)
    report.pop("cells")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
