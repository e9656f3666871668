"""`forge demo`: bring up the embedded stack, enqueue a sample, drain it, print a summary."""

from __future__ import annotations

import argparse
import json
import sys
import time

from forge_dagster.core.runtime import open_store
from forge_dagster.core.store import JobSpec
from forge_dagster.core.worker import Worker, echo_handler


def run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    runtime, store = open_store(pool_size=8)
    print(runtime.describe(), file=sys.stderr, flush=True)
    with store:
        run_tag = f"demo-{int(time.time())}"
        specs = [JobSpec("echo", {"n": i}, external_id=f"{run_tag}-{i}", mode="realtime") for i in range(args.jobs)]
        report = store.enqueue(specs, source="demo")
        Worker(store, echo_handler, concurrency=4, mode="realtime").run(until_idle=True)
        summary = {"mode": runtime.mode, "jobs_total": len(report.accepted), "jobs": store.counts(),
                   "batches": store.batch_counts(), "cost_usd": 0.0,
                   "elapsed_s": round(time.monotonic() - started, 2)}
    print(json.dumps(summary) if args.json else f"demo done: {summary}")
    return 0
