"""Every benchmark in one run: `python -m benchmarks [--database-url URL] [--quick] [--only a,b]`.

Prints one table (each row: what it measures, the median of the repeats, the spread min-max, and how it
compares), and writes `benchmarks.json` and `benchmarks.png` (every row's ratio) under benchmarks/results/
(`benchmarks-quick.*` with --quick). Sections, in order: intake, lease_store, shaping, validation,
realtime, end_to_end. With no --database-url: FORGE_DATABASE_URL, else FORGE_TEST_DATABASE_URL, else an
embedded PostgreSQL started in a temporary directory for the run (sections that need no database start
none). Defaults take about 8 minutes on two quiet cores; --quick is a 1-2 minute smoke run with small
counts and single runs (no spread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import end_to_end, intake, lease_store, realtime, shaping, validation
from benchmarks._common import database, server_settings
from benchmarks.report import Row, render_table, write_chart
from forge_dagster.core.runtime import redact_url

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Section:
    name: str
    needs_database: bool
    default: dict[str, Any]
    quick: dict[str, Any]


SECTIONS = [
    Section("intake", True, {"jobs": 100_000, "repeat": 3}, {"jobs": 10_000, "repeat": 1}),
    Section("lease_store", True, {"jobs": 5_000, "jobs_single": 500, "repeat": 3},
            {"jobs": 1_000, "jobs_single": 200, "repeat": 1}),
    Section("shaping", False, {"requests": 50_000, "repeat": 5}, {"requests": 10_000, "repeat": 3}),
    Section("validation", False, {"results": 50_000, "repeat": 3}, {"results": 10_000, "repeat": 3}),
    Section("realtime", True, {"quick": False, "repeat": 3}, {"quick": True, "repeat": 1}),
    Section("end_to_end", True, {"jobs": 10_000, "repeat": 3}, {"jobs": 2_000, "repeat": 1}),
]
ALIASES = {"lease": "lease_store", "e2e": "end_to_end", "end-to-end": "end_to_end", "lease-store": "lease_store"}


def _run_section(section: Section, params: dict[str, Any], url: str | None, mode: str | None,
                 report: dict[str, Any]) -> list[Row]:
    if section.name == "intake":
        return intake.rows(url, **params)
    if section.name == "lease_store":
        detail = lease_store.run(url, mode, params["jobs"], params["jobs_single"], params["repeat"], peers=True)
        cells = detail.pop("cells")
        report["lease_store"] = detail
        return lease_store.as_rows(cells)
    if section.name == "shaping":
        return shaping.rows(**params)
    if section.name == "validation":
        return validation.rows(**params)
    if section.name == "realtime":
        return realtime.rows(url, **params)
    return end_to_end.rows(url, **params)


def selected(only: str | None) -> list[Section]:
    if not only:
        return SECTIONS
    names = {ALIASES.get(n.strip(), n.strip()) for n in only.split(",") if n.strip()}
    unknown = names - {s.name for s in SECTIONS}
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; known: {[s.name for s in SECTIONS]}")
    return [s for s in SECTIONS if s.name in names]


def run(sections: list[Section], *, database_url: str | None, quick: bool, repeat: int | None,
        output_dir: Path, argv: list[str]) -> dict[str, Any]:
    """Run `sections`, print the table, write the JSON and the chart; return the JSON document."""
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": "python -m benchmarks " + " ".join(argv),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                 "load_avg_at_start": os.getloadavg()},
        "sections": {},
    }
    rows: list[Row] = []
    needs_db = any(s.needs_database for s in sections)
    with database(database_url) if needs_db else nullcontext((None, None)) as (url, mode):
        if url:
            report["database"] = {"mode": mode, "url": redact_url(url), **server_settings(url)}
            print(f"benchmarks: {mode} PostgreSQL at {redact_url(url)}", flush=True)
        for section in sections:
            params = dict(section.quick if quick else section.default)
            if repeat is not None:
                params["repeat"] = repeat
            print(f"== {section.name} {params}", flush=True)
            began = time.perf_counter()
            found = _run_section(section, params, url, mode, report)
            report["sections"][section.name] = {"params": params, "seconds": round(time.perf_counter() - began, 1)}
            rows += found
            print(render_table(found), flush=True)
    report["host"]["load_avg_at_end"] = os.getloadavg()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["rows"] = [r.as_dict() for r in rows]
    stem = "benchmarks-quick" if quick else "benchmarks"
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    title = (f"Forge benchmarks ({'quick, ' if quick else ''}{report.get('database', {}).get('mode', 'no')} "
             f"PostgreSQL, {os.cpu_count()} CPUs, {report['created_at']})")
    write_chart(rows, output_dir / f"{stem}.png", title)
    print(f"\n{render_table(rows)}\n\n{report['seconds']} s; wrote {output_dir / stem}.json and .png", flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="default: FORGE_DATABASE_URL, FORGE_TEST_DATABASE_URL, "
                                               "else an embedded PostgreSQL in a temporary directory")
    parser.add_argument("--quick", action="store_true", help="small counts, one run each (a smoke run)")
    parser.add_argument("--only", help="comma-separated sections: " + ", ".join(s.name for s in SECTIONS))
    parser.add_argument("--repeat", type=int, help="repeats per measurement (overrides each section's)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help=f"where to write (default {RESULTS})")
    args = parser.parse_args(argv)
    run(selected(args.only), database_url=args.database_url, quick=args.quick, repeat=args.repeat,
        output_dir=args.output_dir, argv=argv)


if __name__ == "__main__":
    main()
