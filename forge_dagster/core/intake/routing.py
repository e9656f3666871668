"""Routing: every way a job comes in (a file line, the Python API, a row another application inserted)
is pinned to the processor version a new job gets and sent to the lane its processor decides (`job_mode`),
before the store takes it. `submit_jobs` is the one way in for jobs built in Python."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from forge_dagster.core.config import load_settings
from forge_dagster.core.models import (
    EnqueueReport,
    JobSpec,
    UnusableCallback,
    callback_url_problem,
    settle_mode,
)
from forge_dagster.core.ops.callback_policy import CallbackPolicy
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.processors import Processor, validate_input
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.realtime.routing import auto_mode
from forge_dagster.core.store import ForgeStore


def job_mode(processor: Processor, payload: Any, due_at: datetime | None, realtime_within_s: float) -> str:
    """The lane a new job of `processor` runs in: the processor's mode, and for `auto` realtime when the
    job is small or due soon (core/realtime/routing.auto_mode), else batch."""
    if processor.mode == "auto":
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


def route_specs(store: ForgeStore, specs: Sequence[JobSpec]) -> list[JobSpec | str]:
    """Jobs from the Python API, routed as intake routes them: pinned to the version a new job gets and sent
    to the lane its processor decides (a mode the job states is kept where the processor runs in it). A
    retired version (or a name with none active) or a mode that does not fit is refused: its place holds
    the reason. An unknown processor stays as stated, else batch; the builder fails it with its reason (as
    it does an input that does not fit), so nothing is lost silently."""
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
            routed.append(dataclasses.replace(spec, processor_version=processor.version, mode=mode))
    return routed


def submit_jobs(store: ForgeStore, specs: Sequence[JobSpec], *, source: str = "api") -> EnqueueReport:
    """Route `specs` as every intake routes them, then enqueue them with one COPY. A job refused by routing
    (a retired version, a mode its processor does not run in) is rejected with the reason, like one the
    store refuses; the others still go in."""
    return store.intake.enqueue(route_specs(store, specs), source=source)


def review_external_rows(
    store: ForgeStore, catalog: ProcessorCatalog, *, realtime_within_s: float | None = None
) -> tuple[int, int]:
    """Review every row other applications inserted (none is claimable before): the processor and the
    version the row names must exist and not be retired, the input must fit, a callback URL must be
    http(s) and not one the callback policy refuses without a lookup. Accepted rows are pinned and routed like every other job (a mode the row states is kept);
    refused ones fail with the reason. Returns (accepted, refused)."""
    check = processor_check(catalog, realtime_within_s=realtime_within_s)
    policy = CallbackPolicy.from_environ()

    def review(row: dict[str, Any]) -> tuple[str, str]:
        url = row["callback_url"]
        problem = url and (callback_url_problem(url) or policy.intake_problem(url))
        if problem:
            raise UnusableCallback(problem)
        version, mode = check(row["processor"], row["processor_version"], row["payload"], row["due_at"])
        return version, settle_mode(mode, row["mode"])

    accepted, refused = store.intake.review_unchecked(review)
    return accepted, len(refused)
