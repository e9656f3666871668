"""Intake: jobs per second through the `forge submit` path beside a raw COPY of the same rows.

    python -m benchmarks.intake [--database-url URL] [--jobs N] [--repeat R]

Forge: `intake_file(store, load_catalog(store), path)`, the function `forge submit FILE` calls: read the
JSONL file, parse and check each line (its shape, its processor, its input against the template), then one
COPY into a staging table and one INSERT ... ON CONFLICT that enqueues the jobs and writes their events.
Reference: one COPY of the finished rows (same ids, processors, versions, payloads) straight into `jobs`,
formatted beforehand: the database's own ingest speed, with no parsing, checking, deduplication or events.
Every repeat starts from an empty table and checks that all jobs arrived.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks._common import database, fresh_schema
from benchmarks.report import Ratio, Row, render_table
from forge_dagster.core.intake.inbox import intake_file
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import ForgeStore

SOURCE = "file:bench.jsonl"
COPY_JOBS = "COPY jobs (source, external_id, processor, processor_version, mode, payload, max_attempts) FROM STDIN"


def intake_lines(n: int) -> list[dict]:
    """`n` intake lines alternating between the two example processors, each with its own id."""
    lines = []
    for i in range(n):
        if i % 2:
            lines.append({"id": f"r{i}", "processor": "review_sentiment",
                          "input": {"review": f"Review {i}: arrived fast, battery is fine.", "rating": 1 + i % 5}})
        else:
            lines.append({"id": f"t{i}", "processor": "ticket_triage",
                          "input": {"subject": f"Ticket {i}", "body": "The export button does nothing."}})
    return lines


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_rows(lines: list[dict]) -> bytes:
    """The same jobs as COPY text rows, as forge submit would enqueue them (version pinned, mode batch)."""
    catalog = load_processors()
    out = []
    for line in lines:
        processor = catalog[line["processor"]]
        out.append("\t".join((SOURCE, line["id"], processor.name, processor.version, "batch",
                              _copy_text(json.dumps(line["input"])), "3")))
    return ("\n".join(out) + "\n").encode()


def _empty(store: ForgeStore) -> None:
    with store.transaction() as conn:
        conn.execute("TRUNCATE jobs, job_events RESTART IDENTITY CASCADE")


def _count(store: ForgeStore) -> int:
    with store.transaction() as conn:
        return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]


def forge_round(store: ForgeStore, path: Path, n: int) -> float:
    _empty(store)
    started = time.perf_counter()
    report = intake_file(store, load_catalog(store), path, source=SOURCE)
    seconds = time.perf_counter() - started
    if report.accepted != n or report.rejected or _count(store) != n:
        raise RuntimeError(f"forge submit: accepted {report.accepted}, rejected {len(report.rejected)}, expected {n}")
    return n / seconds


def raw_round(store: ForgeStore, url: str, rows: bytes, n: int) -> float:
    _empty(store)
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(store.schema)))
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(COPY_JOBS) as copy:
            copy.write(rows)
        conn.commit()
        seconds = time.perf_counter() - started
    if _count(store) != n:
        raise RuntimeError(f"raw COPY: expected {n} rows")
    return n / seconds


def rows(url: str, *, jobs: int, repeat: int) -> list[Row]:
    """Forge and raw COPY, alternating repeat by repeat so both see the same load."""
    lines = intake_lines(jobs)
    raw = copy_rows(lines)
    forge_samples, raw_samples = [], []
    with fresh_schema(url, "intake") as schema, ForgeStore(url, schema, pool_size=2) as store, \
            tempfile.TemporaryDirectory() as tmp:
        store.migrate()
        path = Path(tmp) / "bench.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        load_catalog(store)  # the registry sync of a first run is not part of a submit's cost
        for _ in range(repeat):
            forge_samples.append(forge_round(store, path, jobs))
            raw_samples.append(raw_round(store, url, raw, jobs))
    what = f"{jobs:,} jobs from a JSONL file into the jobs table"
    return [
        Row("intake", "forge submit", f"{what}: parse + check each line + COPY via staging + events", "jobs/s",
            forge_samples, [Ratio.paired("raw COPY", forge_samples, raw_samples)]),
        Row("intake", "raw COPY", f"{what}: pre-formatted rows, one COPY, nothing checked", "jobs/s", raw_samples),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with database(args.database_url) as (url, _):
        print(render_table(rows(url, jobs=args.jobs, repeat=args.repeat)))


if __name__ == "__main__":
    main()
