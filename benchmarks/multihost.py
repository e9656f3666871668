"""Forge across hosts on this machine (tests/deploy/multihost.py): network namespaces joined by veth links,
host A with PostgreSQL 15, Redis and the simulator, B with Dagster's webserver and daemon, C with Forge's code
server and `forge work`, D with more `forge work`. Two runs, each of realtime jobs and a batch round: D's
workers SIGKILLed, then D's link taken down mid-write. Needs root, `ip` and Debian's PostgreSQL 15 binaries.

    python -m benchmarks.multihost [--realtime 5000] [--batch 500] [--workers-c 2] [--workers-d 2]
                                   [--concurrency 16] [--lease-ttl-s 5] [--only kill,partition]

Results go to benchmarks/results/multihost.json (deploy/multihost/run.sh runs this).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from tabulate import tabulate

from tests.deploy.multihost import run_multihost
from tests.deploy.netns import available

RESULTS = Path(__file__).parent / "results" / "multihost.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realtime", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--workers-c", type=int, default=2)
    parser.add_argument("--workers-d", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--lease-ttl-s", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--only", default="kill,partition")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if (why := available()) is not None:
        print(f"multihost: cannot build namespaces here: {why}")
        return 2
    rows, problems = [], {}
    for scenario in args.only.split(","):
        started = time.monotonic()
        report = run_multihost(scenario, realtime=args.realtime, batch=args.batch, workers_c=args.workers_c,
                               workers_d=args.workers_d, concurrency=args.concurrency,
                               lease_ttl_s=args.lease_ttl_s, latency_ms=args.latency_ms)
        row = report.row() | {"wall s": round(time.monotonic() - started, 1), "D stats": report.d_stats}
        rows.append(row)
        if report.problems:
            problems[scenario] = report.problems + ([report.errors[-2000:]] if report.errors else [])
    print(tabulate([{k: v for k, v in r.items() if k not in ("split", "by state", "D stats", "reclaimed by")}
                    for r in rows], headers="keys"))
    for r in rows:
        print(f"{r['scenario']}: split {r['split']}; by state {r['by state']}; reclaimed by {r['reclaimed by']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
        "cores": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items() if k != "output"},
        "runs": rows, "problems": problems}, indent=2, default=str) + "\n")
    for scenario, found in problems.items():
        print(f"PROBLEMS in {scenario}: {found}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
