"""Intake for the pipeline: JSONL files dropped in the inbox, and rows other applications inserted.

Each file is enqueued (idempotently: its lines carry ids derived from the file's content when they
have none) and moved to `processed/` with a report of the lines it refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_dagster.core.intake import parse_lines
from forge_dagster.core.processors import ProcessorCatalog, validate_input
from forge_dagster.core.store import JobSpec, LeaseStore


@dataclass
class IntakeReport:
    files: int = 0
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    external_accepted: int = 0
    external_refused: int = 0


def processor_check(catalog: ProcessorCatalog) -> Callable[[str, str | None, Any], tuple[str, str]]:
    """A check for intake: the processor must exist and the input must fit its template.
    Returns (pinned version, mode)."""

    def check(name: str, version: str | None, payload: Any) -> tuple[str, str]:
        try:
            processor = catalog.for_new_job(name, version)
        except KeyError:
            known = ", ".join(sorted(catalog)) or "none"
            raise ValueError(
                f"unknown processor {name!r}{' version ' + version if version else ''} (known: {known})"
            ) from None
        problems = validate_input(processor, payload)
        if problems:
            raise ValueError("input: " + "; ".join(problems))
        if processor.mode == "auto":  # small requests run realtime (core/realtime/routing.auto_mode)
            from forge_dagster.core.realtime.routing import auto_mode

            return processor.version, auto_mode(processor, payload)
        return processor.version, "realtime" if processor.mode == "realtime" else "batch"

    return check


def _with_ids(specs: list[JobSpec], lines: list[int], digest: str) -> list[JobSpec]:
    """Give id-less lines an id from the file's content and line, so re-submitting a file is harmless."""
    return [
        s if s.external_id else JobSpec(**{**s.__dict__, "external_id": f"{digest}:{n}"})
        for s, n in zip(specs, lines, strict=True)
    ]


def intake_file(
    store: LeaseStore, catalog: ProcessorCatalog, path: Path, *, source: str | None = None
) -> IntakeReport:
    """Enqueue one JSONL file; bad lines are reported with their numbers, good ones go in."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    parsed = parse_lines(data.splitlines(), check_processor=processor_check(catalog))
    specs = _with_ids(parsed.specs, parsed.lines, digest)
    report = store.enqueue(specs, source=source or f"file:{path.name}")
    rejected = [{"line": e.line, "error": e.error} for e in parsed.errors]
    rejected += [{"line": parsed.lines[r.index], "error": r.error} for r in report.rejected]
    return IntakeReport(
        files=1, accepted=len(report.accepted), rejected=sorted(rejected, key=lambda r: r["line"])
    )


def drain_inbox(store: LeaseStore, catalog: ProcessorCatalog, inbox: Path) -> IntakeReport:
    """Enqueue every *.jsonl in `inbox`, move each to `inbox/processed/` with a `.report.json`."""
    total = IntakeReport()
    if not inbox.is_dir():
        return total
    done = inbox / "processed"
    for path in sorted(inbox.glob("*.jsonl")):
        report = intake_file(store, catalog, path)
        done.mkdir(exist_ok=True)
        path.rename(done / path.name)
        (done / f"{path.name}.report.json").write_text(
            json.dumps({"accepted": report.accepted, "rejected": report.rejected}, indent=1)
        )
        total.files += 1
        total.accepted += report.accepted
        total.rejected += [{"file": path.name, **r} for r in report.rejected]
    return total


def review_external_rows(store: LeaseStore, catalog: ProcessorCatalog) -> tuple[int, int]:
    """Check rows other applications inserted; returns (accepted, refused)."""
    check = processor_check(catalog)

    def review(name: str, payload: Any) -> tuple[str, str]:
        return check(name, None, payload)

    accepted, refused = store.review_unchecked(review)
    return accepted, len(refused)
