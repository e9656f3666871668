"""The operator's console with a million jobs: how long its pages take to answer.

    python -m benchmarks.console [--database-url URL] [--jobs 1000000] [--repeat 20]

Seeds a fresh schema with COPY: `--jobs` jobs over 30 days (85% succeeded, then invalid, dead, failed,
cancelled, pending), four processors in two versions each (OpenAI and Anthropic), batches of 10,000, two
events per job, an error body on the jobs that did not succeed, a ledger row on every tenth job. The store's
triggers are off while seeding (`session_replication_role = replica`): the rows stand for history, the
accepted-output rule is not what is measured. Then VACUUM ANALYZE, and each page is asked `--repeat` times
through the console's ASGI app in this process (routing, store reads, template rendering; no network): the
median and the slowest are printed, against the issue's 200 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from starlette.testclient import TestClient

from benchmarks._common import database, fresh_schema, schema_options
from forge_dagster.console import ConsoleConfig, create_app
from forge_dagster.core.store import ForgeStore, db

PROCESSORS = [("triage", "openai", "gpt-4o-mini"), ("summary", "anthropic", "claude-haiku-4-5"),
              ("extract", "openai", "gpt-4.1-mini"), ("sentiment", "anthropic", "claude-sonnet-4-5")]
VERSIONS = ("1.0.0", "1.1.0")
STATES = [("succeeded", 85), ("invalid", 5), ("dead", 3), ("failed", 2), ("cancelled", 1), ("pending", 4)]
BATCH_SIZE = 10_000
TARGET_MS = 200.0


def _state_picker(rng: random.Random):
    weighted = [s for s, w in STATES for _ in range(w)]
    return lambda: rng.choice(weighted)


def seed(url: str, schema: str, jobs: int) -> dict[str, int]:
    """COPY the rows in; returns the ids the timed pages look at."""
    rng = random.Random(21)
    pick = _state_picker(rng)
    now = datetime.now(UTC)
    start = now - timedelta(days=30)
    step = (now - start) / jobs
    with psycopg.connect(url, options=schema_options(schema)) as conn:
        conn.execute("SET session_replication_role = replica")
        for name, provider, model in PROCESSORS:
            for version in VERSIONS:
                definition = {"name": name, "version": version, "provider": provider, "model": model,
                              "template": "Do it: {text}", "max_tokens": 200, "response_schema": {"type": "object"}}
                conn.execute("INSERT INTO processors (name, version, status, provider, model, mode, tags, definition,"
                             " fingerprint, source) VALUES (%s, %s, %s, %s, %s, 'batch', '{}', %s, %s, 'bench')",
                             (name, version, "active" if version == VERSIONS[-1] else "retired", provider, model,
                              json.dumps(definition), f"fp-{name}-{version}"))
        batches = (jobs + BATCH_SIZE - 1) // BATCH_SIZE
        with conn.cursor().copy("COPY batches (id, provider, model, processor, processor_version, state, "
                                "request_count, created_at) FROM STDIN") as copy:
            for b in range(1, batches + 1):
                name, provider, model = PROCESSORS[b % len(PROCESSORS)]
                copy.write_row((b, provider, model, name, VERSIONS[b % 2], "collected", BATCH_SIZE,
                                start + step * (b - 1) * BATCH_SIZE))
        columns = ("id, source, external_id, processor, processor_version, mode, payload, state, attempt, "
                   "max_attempts, batch_id, raw_output, errors, reason, created_at, finished_at, reviewed")
        with conn.cursor().copy(f"COPY jobs ({columns}) FROM STDIN") as copy:
            for i in range(1, jobs + 1):
                batch = (i - 1) // BATCH_SIZE + 1
                name = PROCESSORS[batch % len(PROCESSORS)][0]
                state = pick()
                created = start + step * i
                bad = state not in ("succeeded", "pending")
                copy.write_row((i, "file", f"ext-{i}", name, VERSIONS[batch % 2], "batch",
                                json.dumps({"text": f"job {i}"}), state, 1 if state != "pending" else 0, 3,
                                batch if state != "pending" else None,
                                '{"answer": "not what was asked"}' if bad else None,
                                json.dumps(["'label' is a required property"]) if bad else None,
                                f"{state}: seeded" if bad else ("validated" if state == "succeeded" else None),
                                created, None if state == "pending" else created + timedelta(minutes=5), True))
        with conn.cursor().copy("COPY job_events (job_id, at, actor, from_state, to_state, attempt, reason) "
                                "FROM STDIN") as copy:
            for i in range(1, jobs + 1):
                created = start + step * i
                copy.write_row((i, created, "intake", None, "pending", 0, "enqueued"))
                copy.write_row((i, created + timedelta(minutes=1), f"bench:{i % 7}", "pending", "claimed", 1, None))
        with conn.cursor().copy("COPY costs (job_id, attempt, batch_id, processor, provider, model, input_tokens, "
                                "cached_input_tokens, output_tokens, reasoning_tokens, cost_usd, pricing_version, "
                                "batch_priced, booked_at) FROM STDIN") as copy:
            for i in range(1, jobs + 1, 10):
                batch = (i - 1) // BATCH_SIZE + 1
                name, provider, model = PROCESSORS[batch % len(PROCESSORS)]
                copy.write_row((i, 1, batch, name, provider, model, 120, 0, 40, 0, 0.00012, "bench", True,
                                start + step * i + timedelta(minutes=5)))
        for table in ("batches", "jobs", "job_events"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    with psycopg.connect(url, options=schema_options(schema), autocommit=True) as conn:
        for table in ("jobs", "job_events", "batches", "costs", "processors"):
            conn.execute(f"VACUUM ANALYZE {table}")
        invalid = conn.execute("SELECT max(id) FROM jobs WHERE state = 'invalid'").fetchone()[0]
    return {"invalid_job": invalid, "batch": jobs // BATCH_SIZE // 2 or 1, "middle": jobs // 2}


def pages(ids: dict[str, int]) -> list[tuple[str, str]]:
    """(what, path) of each page timed."""
    day = (datetime.now(UTC) - timedelta(days=12)).date().isoformat()
    next_day = (datetime.now(UTC) - timedelta(days=11)).date().isoformat()
    return [
        ("jobs list (newest 50, counts per state)", "/jobs"),
        ("filter: state invalid", "/jobs?state=invalid"),
        ("filter: dead, one processor", "/jobs?state=dead&processor=summary"),
        ("filter: processor and version", "/jobs?processor=extract&version=1.0.0"),
        ("filter: provider anthropic", "/jobs?provider=anthropic"),
        ("filter: one day", f"/jobs?since={day}&until={next_day}"),
        ("filter: one batch", f"/jobs?batch={ids['batch']}"),
        ("filter: intake id prefix", f"/jobs?q=ext-{ids['middle'] // 10}"),
        ("next page (keyset)", f"/jobs?state=invalid&before={ids['middle']}"),
        ("job page (invalid job)", f"/jobs/{ids['invalid_job']}"),
        ("batches list", "/batches"),
        ("batch page", f"/batches/{ids['batch']}"),
        ("fleet", "/fleet"),
        ("keys", "/keys"),
        ("processors (rates per version)", "/processors"),
        ("costs (30 days)", "/costs"),
    ]


def measure(url: str, schema: str, ids: dict[str, int], repeat: int) -> list[tuple[str, float, float]]:
    results = []
    with ForgeStore(url, schema, pool_size=4) as store, TestClient(create_app(store, ConsoleConfig())) as client:
        for what, path in pages(ids):
            assert client.get(path).status_code == 200, path  # warm: plans, templates, the pool
            samples = []
            for _ in range(repeat):
                began = time.perf_counter()
                answer = client.get(path)
                samples.append((time.perf_counter() - began) * 1000)
                assert answer.status_code == 200, path
            results.append((what, statistics.median(samples), max(samples)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with database(args.database_url) as (url, mode), fresh_schema(url, "console") as schema:
        db.migrate(url, schema)
        began = time.perf_counter()
        ids = seed(url, schema, args.jobs)
        print(f"seeded {args.jobs:,} jobs ({mode} PostgreSQL) in {time.perf_counter() - began:.0f} s")
        rows = measure(url, schema, ids, args.repeat)
    width = max(len(w) for w, _, _ in rows)
    print(f"{'page'.ljust(width)}  median ms  slowest ms  under {TARGET_MS:.0f} ms")
    for what, median, slowest in rows:
        print(f"{what.ljust(width)}  {median:9.1f}  {slowest:10.1f}  {'yes' if median < TARGET_MS else 'NO'}")


if __name__ == "__main__":
    main()
