"""`forge demo`: Forge's main job end to end on the embedded default.

Brings up PostgreSQL, Dagster's storage and (with no provider keys) the local simulator; drops a
sample of jobs across both providers and both example processors into the inbox; then lets the
sensors and asset jobs run through Dagster in this process until every job has ended.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime

import dagster as dg

from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import bring_up
from forge_dagster.core.store import LeaseStore
from forge_dagster.definitions import build_definitions
from forge_dagster.orchestration import InProcessDaemon
from forge_dagster.resources.providers import ProviderPortsResource

SUBJECTS = ["Cannot log in", "Invoice charged twice", "Export to CSV is slow", "Feature idea: dark mode",
            "App crashes on upload", "How do I reset my password?", "Data missing after sync"]
REVIEWS = ["Battery lasts two days, great value.", "Arrived broken and support never answered.",
           "Decent screen, but the price is too high.", "Setup was easy and delivery was fast.",
           "It stopped charging after a week.", "Exactly as described, would buy again."]

OPEN_STATES = ("pending", "claimed", "running", "submitted", "collected")


def sample_lines(n: int, seed: int) -> list[dict]:
    """`n` jobs, alternating between the two example processors (OpenAI and Anthropic)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if i % 2 == 0:
            subject = rng.choice(SUBJECTS)
            lines.append({"id": f"t{i}", "processor": "ticket_triage",
                          "input": {"subject": subject, "body": f"Ticket {i}: {subject.lower()}, please help."}})
        else:
            lines.append({"id": f"r{i}", "processor": "review_sentiment",
                          "input": {"review": rng.choice(REVIEWS), "product": "Model X", "rating": rng.randint(1, 5)}})
    return lines


def _start_simulator(seed: int):
    from forge_dagster.simulator import SimConfig, Simulator

    # A few faults so the demo shows Forge handling them: malformed and truncated outputs get retried.
    config = SimConfig(batch_processing_s=1.0, malformed_rate=0.02, truncation_rate=0.01)
    return Simulator(seed=seed, config=config).start()


def run_demo(args: argparse.Namespace) -> int:
    started, since = time.monotonic(), datetime.now(UTC)
    settings = load_settings()
    runtime = bring_up(settings, dagster=True)
    print(runtime.describe(), file=sys.stderr, flush=True)
    sim = None if not settings.providers_simulated else _start_simulator(args.seed)
    if sim is not None:
        print(f"forge: providers=simulator (local test double at {sim.url}, not a provider)", file=sys.stderr)
    store = LeaseStore(runtime.database_url, settings.store_schema, pool_size=4)
    try:
        store.migrate()
        name = f"demo-{int(time.time() * 1000)}.jsonl"
        inbox = settings.forge_home / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        tmp = inbox / (name + ".part")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in sample_lines(args.jobs, args.seed)))
        tmp.rename(inbox / name)
        source = f"file:{name}"
        print(f"forge demo: {args.jobs} jobs dropped in {inbox}; sensors and runs go through Dagster now",
              file=sys.stderr, flush=True)

        resources = {}
        if sim is not None:
            resources["providers"] = ProviderPortsResource(simulator_url=sim.url)
        defs = build_definitions(resources)
        daemon = InProcessDaemon(
            defs, dg.DagsterInstance.get(), ["pending_work_sensor", "batch_status_sensor"],
            run_config=lambda job: {
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                **({"ops": {"provider_batches": {"config": {"max_requests_per_batch": 100}}}}
                   if job == "build_batches" else {}),
            },
        )
        deadline = time.monotonic() + args.timeout
        while True:
            tick = daemon.tick()
            counts = store.counts(source=source)
            elapsed = time.monotonic() - started
            failed_runs = sum(1 for _, _, ok in tick.runs if not ok)
            print(f"[{elapsed:5.1f}s] jobs {dict(sorted(counts.items()))} | batches "
                  f"{dict(sorted(store.batch_counts(since=since).items()))} | runs {len(tick.runs)}"
                  + (f" ({failed_runs} failed)" if failed_runs else ""), file=sys.stderr, flush=True)
            total = sum(counts.values())
            if total and not any(counts.get(s) for s in OPEN_STATES):
                break
            if time.monotonic() > deadline:
                print(f"forge demo: timed out after {args.timeout}s", file=sys.stderr)
                break
            if not tick.runs:
                time.sleep(0.5)
        summary = {
            "mode": runtime.mode, "jobs_total": sum(counts.values()), "jobs": counts,
            "batches": store.batch_counts(since=since), "cost_usd": round(store.source_cost(source), 6),
            "elapsed_s": round(time.monotonic() - started, 1),
        }
    finally:
        store.close()
        if sim is not None:
            sim.stop()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"demo finished in {summary['elapsed_s']}s: {summary['jobs_total']} jobs {summary['jobs']}, "
              f"batches {summary['batches']}, cost ${summary['cost_usd']:.4f}\n"
              f"See the runs in the Dagster UI: forge dev")
    open_jobs = sum(summary["jobs"].get(s, 0) for s in OPEN_STATES)
    return 0 if open_jobs == 0 else 1
