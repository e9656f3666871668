"""Intake for the pipeline: JSONL files dropped in the inbox, jobs from the Python API, and rows other
applications inserted, all routed the same way (`job_mode`).

Each file is enqueued (idempotently: its lines carry ids derived from the file's content when they
have none) and moved to `processed/` with a report of the lines it refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from forge_dagster.core.callback_policy import CallbackPolicy
from forge_dagster.core.config import load_settings
from forge_dagster.core.intake import parse_lines
from forge_dagster.core.models import UnusableCallback, callback_url_problem, settle_mode
from forge_dagster.core.processors import Processor, ProcessorCatalog, validate_input
from forge_dagster.core.store import JobSpec, LeaseStore


@dataclass
class IntakeReport:
    files: int = 0
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    external_accepted: int = 0
    external_refused: int = 0


def job_mode(processor: Processor, payload: Any, due_at: datetime | None, realtime_within_s: float) -> str:
    """The lane a new job of `processor` runs in: the processor's mode, and for `auto` realtime when the
    job is small or due soon (core/realtime/routing.auto_mode), else batch."""
    if processor.mode == "auto":
        from forge_dagster.core.realtime.routing import auto_mode

        return auto_mode(processor, payload, due_at=due_at, realtime_within_s=realtime_within_s)
    return processor.mode if processor.mode in ("realtime", "handler") else "batch"


def _pinned(catalog: ProcessorCatalog, name: str, version: str | None) -> Processor:
    """The version a new job gets; ValueError names an unknown processor or version, or a retired one."""
    try:
        return catalog.for_new_job(name, version)
    except KeyError:
        known = ", ".join(sorted(catalog)) or "none"
        raise ValueError(
            f"unknown processor {name!r}{' version ' + version if version else ''} (known: {known})"
        ) from None


def processor_check(
    catalog: ProcessorCatalog, *, realtime_within_s: float | None = None
) -> Callable[..., tuple[str, str]]:
    """A check for intake: the processor must exist and the input must fit its template.
    `check(name, version, payload, due_at=None)` returns (pinned version, mode)."""
    within = load_settings().auto_realtime_within_s if realtime_within_s is None else realtime_within_s

    def check(name: str, version: str | None, payload: Any, due_at: datetime | None = None) -> tuple[str, str]:
        processor = _pinned(catalog, name, version)
        problems = validate_input(processor, payload)
        if problems:
            raise ValueError("input: " + "; ".join(problems))
        return processor.version, job_mode(processor, payload, due_at, within)

    return check


def route_specs(store: LeaseStore, specs: Sequence[JobSpec]) -> list[JobSpec | str]:
    """Jobs from the Python API without a mode, routed as intake routes them: pinned to the version a new
    job gets and sent to the lane its processor decides. A retired version (or a name with none active) is
    refused: its place holds the reason. An unknown processor stays batch; the builder fails it with
    its reason (as it does an input that does not fit), so nothing is lost silently."""
    from forge_dagster.core.processor_registry import load_catalog

    catalog = load_catalog(store, sync=False)
    within = load_settings().auto_realtime_within_s
    routed: list[JobSpec | str] = []
    for spec in specs:
        try:
            processor = catalog.for_new_job(spec.processor, spec.processor_version)
        except KeyError:
            routed.append(spec if spec.mode is not None else dataclasses.replace(spec, mode="batch"))
            continue
        except ValueError as exc:
            routed.append(spec if spec.mode is not None else str(exc))
            continue
        try:
            mode = settle_mode(job_mode(processor, spec.payload, spec.due_at, within), spec.mode)
        except ValueError as exc:
            routed.append(str(exc))
        else:
            routed.append(dataclasses.replace(spec, processor_version=spec.processor_version or processor.version,
                                              mode=mode))
    return routed


def _with_ids(specs: list[JobSpec], lines: list[int], digest: str) -> list[JobSpec]:
    """Give id-less lines an id from the file's content and line, so re-submitting a file is harmless."""
    return [
        s if s.external_id else dataclasses.replace(s, external_id=f"{digest}:{n}")
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


def review_external_rows(
    store: LeaseStore, catalog: ProcessorCatalog, *, realtime_within_s: float | None = None
) -> tuple[int, int]:
    """Review every row other applications inserted (none is claimable before): the processor and the
    version the row names must exist and not be retired, the input must fit, a callback URL must be
    http(s) and not one the callback policy refuses without a lookup. Accepted rows are pinned and routed like every other job (a mode the row states is kept);
    refused ones fail with the reason. Returns (accepted, refused)."""
    check = processor_check(catalog, realtime_within_s=realtime_within_s)
    policy = CallbackPolicy.from_environ(os.environ)

    def review(row: dict[str, Any]) -> tuple[str, str]:
        url = row["callback_url"]
        problem = url and (callback_url_problem(url) or policy.intake_problem(url))
        if problem:
            raise UnusableCallback(problem)
        version, mode = check(row["processor"], row["processor_version"], row["payload"], row["due_at"])
        return version, settle_mode(mode, row["mode"])

    accepted, refused = store.review_unchecked(review)
    return accepted, len(refused)
