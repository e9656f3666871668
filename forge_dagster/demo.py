"""`forge demo`: Forge's main job end to end on the embedded default.

Brings up PostgreSQL, Dagster's storage and (with no provider keys) the local simulator; drops a
sample of jobs across both providers and every example processor (chat, responses, embeddings,
moderations) into the inbox; then lets the
sensors and asset jobs run through Dagster in this process until every job has ended, printing where
the jobs and batches are after every run. Dagster and the SDKs are imported once the first line is out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forge_dagster.core.store import ForgeStore

SUBJECTS = ["Cannot log in", "Invoice charged twice", "Export to CSV is slow", "Feature idea: dark mode",
            "App crashes on upload", "How do I reset my password?", "Data missing after sync"]
REVIEWS = ["Battery lasts two days, great value.", "Arrived broken and support never answered.",
           "Decent screen, but the price is too high.", "Setup was easy and delivery was fast.",
           "It stopped charging after a week.", "Exactly as described, would buy again."]

OPEN_STATES = ("pending", "claimed", "running", "submitted", "collected")


PRODUCTS = [("Trail shoe", "Light running shoe with a grippy sole"), ("Desk lamp", "Dimmable LED lamp, warm light"),
            ("Kettle", "1.7 l electric kettle with auto shut-off"), ("Backpack", "Waterproof 20 l daypack")]
COMMENTS = ["Thanks, this fixed it for me!", "This product is garbage and so are you.", "Where can I buy spare parts?",
            "Shipping took three weeks, not happy.", "Great write-up, very clear."]


def _ticket(rng: random.Random, i: int) -> dict:
    subject = rng.choice(SUBJECTS)
    return {"subject": subject, "body": f"Ticket {i}: {subject.lower()}, please help."}


def _product(rng: random.Random, i: int) -> dict:
    title, description = rng.choice(PRODUCTS)
    return {"title": f"{title} #{i}", "description": description}


def sample_lines(n: int, seed: int) -> list[dict]:
    """`n` jobs, in turn across the example processors: chat (OpenAI and Anthropic), responses, embeddings
    and moderations."""
    rng = random.Random(seed)
    makers = [
        ("t", "ticket_triage", lambda i: _ticket(rng, i)),
        ("r", "review_sentiment", lambda i: {"review": rng.choice(REVIEWS), "product": "Model X",
                                             "rating": rng.randint(1, 5)}),
        ("s", "ticket_triage_responses", lambda i: _ticket(rng, i)),
        ("p", "product_embeddings", lambda i: _product(rng, i)),
        ("c", "comment_moderation", lambda i: {"comment": rng.choice(COMMENTS)}),
    ]
    lines = []
    for i in range(n):
        prefix, processor, make = makers[i % len(makers)]
        lines.append({"id": f"{prefix}{i}", "processor": processor, "input": make(i)})
    return lines


def _start_simulator(seed: int):
    from forge_dagster.simulator import SimConfig, Simulator

    # A few faults so the demo shows Forge handling them: malformed and truncated outputs get retried.
    config = SimConfig(batch_processing_s=1.0, malformed_rate=0.02, truncation_rate=0.01)
    return Simulator(seed=seed, config=config).start()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """Prints where the demo's jobs and batches are: after every run, and after each tick without one."""

    def __init__(self, store: ForgeStore, source: str, started: float, since: datetime) -> None:
        self.store, self.source, self.started, self.since = store, source, started, since
        self.runs = self.failed = 0

    def __call__(self, job: str | None = None, partition: str | None = None, ok: bool = True) -> dict[str, int]:
        counts = self.store.jobs.counts(source=self.source)
        if job is not None:
            self.runs, self.failed = self.runs + 1, self.failed + (not ok)
        ran = f" | run {job}{'/' + partition if partition else ''}{'' if ok else ' FAILED'}" if job else ""
        failed = f" ({self.failed} failed)" if self.failed else ""
        _say(f"[{time.monotonic() - self.started:5.1f}s] jobs {dict(sorted(counts.items()))} | batches "
             f"{dict(sorted(self.store.batches.counts(since=self.since).items()))} | runs {self.runs}{failed}{ran}")
        return counts

    def started_run(self, job: str, partition: str | None) -> None:
        if job == "build_batches":  # the longest run: intake, shaping and every submission
            _say(f"[{time.monotonic() - self.started:5.1f}s] run {job} started: taking in the inbox, "
                 "shaping batches and submitting them")


def _drop_sample(n: int, seed: int) -> str:
    """Write `n` sample jobs into the inbox (atomically, by rename); returns their intake source."""
    from forge_dagster.assets.batch_pipeline import default_inbox

    name = f"demo-{int(time.time() * 1000)}.jsonl"
    inbox = default_inbox()
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / (name + ".part")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in sample_lines(n, seed)))
    tmp.rename(inbox / name)
    _say(f"forge demo: {n} jobs dropped in {inbox}; sensors and runs go through Dagster now")
    return f"file:{name}"


def _run_until_settled(daemon, progress: Progress, timeout_s: float) -> dict[str, int]:
    """Tick the sensors (each run reports through `progress`) until no demo job is open any more."""
    deadline = time.monotonic() + timeout_s
    while True:
        tick = daemon.tick()
        counts = progress.store.jobs.counts(source=progress.source) if tick.runs else progress()
        if sum(counts.values()) and not any(counts.get(s) for s in OPEN_STATES):
            return counts
        if time.monotonic() > deadline:
            _say(f"forge demo: timed out after {timeout_s}s")
            return counts
        if not tick.runs:
            time.sleep(0.5)


def run_demo(args: argparse.Namespace) -> int:
    started, since = time.monotonic(), datetime.now(UTC)
    _say(f"forge demo: {args.jobs} jobs across both providers and every example processor; bringing up the "
         "database and Dagster's storage (a first start creates them)")
    import dagster as dg

    from forge_dagster.core.config import load_settings
    from forge_dagster.core.runtime import bring_up
    from forge_dagster.core.store import ForgeStore
    from forge_dagster.dagster_instance import apply_pool_limits
    from forge_dagster.definitions import build_definitions
    from forge_dagster.orchestration import InProcessDaemon
    from forge_dagster.resources.provider_keys import ProviderKeysResource

    settings = load_settings()
    sim = None if not settings.providers_simulated else _start_simulator(args.seed)
    if sim is not None:  # the mode line names the simulator this demo runs
        os.environ["FORGE_SIMULATOR_URL"] = sim.url
    runtime = bring_up(settings, dagster=True)
    _say(runtime.describe())
    apply_pool_limits(runtime.dagster_home)
    store = ForgeStore(runtime.database_url, settings.store_schema, pool_size=4)
    try:
        store.migrate()
        source = _drop_sample(args.jobs, args.seed)
        resources = {"provider_keys": ProviderKeysResource(simulator_url=sim.url)} if sim is not None else {}
        progress = Progress(store, source, started, since)
        daemon = InProcessDaemon(
            build_definitions(resources), dg.DagsterInstance.get(), ["pending_work_sensor", "batch_status_sensor"],
            run_config=lambda job: {
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
                **({"ops": {"provider_batches": {"config": {"max_requests_per_batch": 100}}}}
                   if job == "build_batches" else {}),
            },
            on_run=progress, on_start=progress.started_run,
        )
        counts = _run_until_settled(daemon, progress, args.timeout)
        summary = {
            "mode": runtime.mode, "jobs_total": sum(counts.values()), "jobs": counts,
            "batches": store.batches.counts(since=since), "cost_usd": round(store.costs.source_cost(source), 6),
            "processors": {r["processor"]: {"jobs": r["jobs"], "succeeded": r["succeeded"],
                                            "cost_usd": round(float(r["cost_usd"]), 6)}
                           for r in store.costs.source_by_processor(source)},
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
              f"batches {summary['batches']}, cost ${summary['cost_usd']:.4f}")
        for name, row in summary["processors"].items():
            print(f"  {name:<26} {row['succeeded']:>6}/{row['jobs']:<6} succeeded  ${row['cost_usd']:.6f}")
        print("See the runs in the Dagster UI: forge dev")
    open_jobs = sum(summary["jobs"].get(s, 0) for s in OPEN_STATES)
    return 0 if open_jobs == 0 else 1
