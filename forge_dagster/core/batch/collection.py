"""Collecting a provider batch: poll statuses, store every result line, then validate (fail closed)
and settle each job once: succeeded, invalid, failed, or back to pending for another attempt.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forge_dagster.core.batch.provider_storage import release_batch_files
from forge_dagster.core.models import (
    BatchState,
    ErrorClass,
    Provider,
    ProviderError,
    ResultItem,
    ResultOutcome,
    Usage,
)
from forge_dagster.core.ops.notify import batch_messages, rejection_messages
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.pricing import NoPrice, cost_usd, usable_prices
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.repair import limit_repairs
from forge_dagster.core.platform.validation import accepted_output, validate_result
from forge_dagster.core.providers.base import ProviderPort
from forge_dagster.core.providers.quota import (
    KeyPorts,
    PausePolicy,
    batch_port,
    hold_for_token_limit,
    is_enqueued_token_limit,
    provider_batch_errors,
)
from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.batch_store import Settlement
from forge_dagster.core.store.job_store import backoff_delay

log = logging.getLogger(__name__)

LOST_AT_PROVIDER = "not_found"  # raw_status of a batch the provider answers 404 for


@dataclass
class PollReport:
    polled: int = 0
    ended: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def poll_open_batches(
    store: ForgeStore, ports: Mapping[Provider, ProviderPort], *, quota: PausePolicy | None = None
) -> PollReport:
    """One pass over every in-flight batch: read its provider status (through the key it went out with)
    and record it. A batch the provider failed for the model's enqueued-token limit holds submission for
    that model and returns its jobs to pending without spending an attempt (see `_token_limited`)."""
    report = PollReport()
    keys = KeyPorts.of(ports)
    batches = store.batches.open_batches()
    aliases = store.keys.batch_keys([b["id"] for b in batches]) if batches else {}
    for batch in batches:
        report.polled += 1
        try:
            port = keys.for_batch(batch["provider"], aliases.get(batch["id"]))
            status = port.status(batch["provider_batch_id"])
        except ProviderError as exc:
            if exc.status_code == 404:
                # The provider no longer knows the batch: it ended for us, and its jobs are requeued.
                store.batches.update_status(batch["id"], "ended_failed", {}, LOST_AT_PROVIDER)
                report.ended.append(batch["id"])
            report.errors.append(f"batch {batch['id']}: {exc}")
            continue
        except KeyError as exc:
            report.errors.append(f"batch {batch['id']}: {exc}")
            continue
        counts = {
            k: getattr(status.counts, k)
            for k in ("total", "processing", "succeeded", "errored", "expired", "canceled")
        }
        moved = False
        if status.state != batch["state"] or status.ended:
            moved = store.batches.update_status(batch["id"], str(status.state), counts, status.raw_status)
        if moved and status.state == BatchState.ENDED_FAILED:
            try:
                _token_limited(store, port, batch["id"], quota or PausePolicy(), report)
            except ProviderError as exc:  # the reason stays unknown: collection requeues the jobs as usual
                report.errors.append(f"batch {batch['id']}: failure reason unreadable: {exc}")
        if status.ended:
            report.ended.append(batch["id"])
    return report


def _token_limited(store: ForgeStore, port: ProviderPort, batch_id: int, policy: PausePolicy,
                   report: PollReport) -> None:
    """If the provider failed the batch for the model's enqueued-token limit: hold the model's submission
    while batches of ours are in flight, and requeue the jobs. Their attempt is unspent when batches of
    ours were in flight beside it (they explain the refusal); with none, the batch alone is over the limit
    (or another application's batches are) and the retry spends an attempt, so it cannot loop forever."""
    batch = store.batches.get(batch_id)
    errors = provider_batch_errors(port, batch["provider_batch_id"])
    if not is_enqueued_token_limit(errors):
        return
    provider, model = batch["provider"], batch["model"]
    if store.keys.in_flight(provider, model):
        hold_for_token_limit(store, provider, model, errors)
    if store.keys.in_flight_beside(batch_id):
        requeued = store.batches.requeue_never_ran(batch_id, f"waiting: {errors}", policy.hold_recheck_s)
        report.errors.append(f"batch {batch_id}: enqueued-token limit for {model}; {requeued} jobs wait")
        return
    settlements = [
        Settlement(job_id=m["id"], custom_id=m["custom_id"], kind="retry", delay_s=backoff_delay(m["attempt"]),
                   reason=f"batch failed with nothing of ours in flight: {errors}"[:500])
        for m in store.batches.members(batch_id) if m["state"] == "submitted"
    ]
    with store.transaction() as conn:  # the settling and its notice commit together
        states = store.batches.settle(batch, settlements, from_states=["submitted"], pricing_version="-", conn=conn)
        store.outbox.write(rejection_messages(batch, settlements, states), conn=conn)
    report.errors.append(f"batch {batch_id}: enqueued-token limit for {model} with nothing in flight: retried")


@dataclass
class ResultsReport:
    lines: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    stored_now: int = 0


def collect_results(
    store: ForgeStore, ports: Mapping[Provider, ProviderPort], batch_id: int
) -> ResultsReport:
    """Download the ended batch's results (output and error lines, or the results stream) and store them,
    matched by custom_id. Every job still waiting gets exactly one line (missing ones: requeue). Then the
    provider's files of the batch are deleted (provider_storage.py)."""
    batch = store.batches.get(batch_id)
    waiting = {m["custom_id"]: m for m in store.batches.members(batch_id) if m["state"] == "submitted"}
    report = ResultsReport()
    if not waiting:
        return report
    items = None
    if batch["provider_batch_id"] and batch["raw_status"] != LOST_AT_PROVIDER:
        try:
            items = batch_port(store, ports, batch).results(batch["provider_batch_id"], list(waiting))
        except ProviderError as exc:
            if exc.status_code != 404:
                raise
            # Ended, then forgotten (or its result files gone) before we read it: requeue, never strand.
            log.warning("batch %s: results are gone at the provider (%s); its jobs are requeued", batch_id, exc)
    if items is None:  # the provider never accepted it, or lost it
        items = [ResultItem(cid, ResultOutcome.REQUEUE) for cid in waiting]
    rows = [
        (waiting[i.custom_id]["id"], waiting[i.custom_id]["attempt"], i)
        for i in items
        if i.custom_id in waiting
    ]
    report.stored_now = store.batches.store_results(batch_id, rows)
    # Only now, with every line stored, may the provider's copies go (a failure leaves them for `prune`).
    for problem in release_batch_files(store, ports, batch_id=batch_id).errors:
        log.warning("%s", problem)
    report.lines = len(rows)
    report.by_outcome = dict(Counter(str(i.outcome) for _, _, i in rows))
    totals: Counter[str] = Counter()
    for _, _, item in rows:
        totals.update(item.usage.to_dict())
    report.usage = dict(totals)
    return report


def _item_from_row(row: Mapping[str, Any]) -> ResultItem:
    error = None
    if row["error_class"]:
        error = ProviderError(
            ErrorClass(row["error_class"]), row["error_message"] or "", status_code=row["status_code"]
        )
    return ResultItem(
        custom_id=row["custom_id"],
        outcome=ResultOutcome(row["outcome"]),
        status_code=row["status_code"],
        text=row["text"],
        tool_input=row["tool_input"],
        stop_reason=row["stop_reason"],
        usage=Usage(**(row["usage"] or {})),
        error=error,
        raw=row["raw"],
        vector=row.get("vector"),
    )


@dataclass
class ValidationReport:
    by_state: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)  # rejected: job and reason
    accepted_preview: list[dict[str, Any]] = field(default_factory=list)  # accepted: job and output


def _settlement(row: Mapping[str, Any], item: ResultItem, verdict, cost, processor: Processor) -> Settlement:
    base = {
        "job_id": row["job_id"],
        "custom_id": row["custom_id"],
        "usage": item.usage.to_dict(),
        "cost_usd": cost,
        "raw_output": item.text,
    }
    if verdict.accepted:
        accepted = accepted_output(verdict, processor, "batch")
        return Settlement(kind="succeeded", output=accepted, reason="validated", **base)
    delay = backoff_delay(row["attempt"])
    if item.outcome == ResultOutcome.REQUEUE:
        return Settlement(
            kind="retry", reason=f"requeued: {verdict.reason}", exhausted="dead", delay_s=delay, **base
        )
    if item.outcome == ResultOutcome.ERRORED:
        if item.error is not None and item.error.retry_after_s:
            delay = item.error.retry_after_s
        kind = "retry" if verdict.retryable else "failed"
        return Settlement(kind=kind, reason=verdict.reason, exhausted="dead", delay_s=delay, **base)
    # The provider answered, but the output did not pass validation.
    kind = "retry" if verdict.retryable else "invalid"
    return Settlement(kind=kind, reason=verdict.reason, exhausted="invalid", delay_s=delay, **base)


@dataclass
class Judgement:
    """A collected batch's stored results judged against its processor: what to do with each job, the
    price table's version its costs carry, the jobs the provider never ran (expired, cancelled, missing),
    and the report so far (reasons, samples, preview)."""

    settlements: list[Settlement]
    pricing_version: str
    unfinished: set[int]
    report: ValidationReport


def judge_batch(store: ForgeStore, catalog: ProcessorCatalog, batch: Mapping[str, Any]) -> Judgement:
    """Validate every stored result of `batch` (a batch row) against its pinned processor (fail closed)
    and say how each job settles; nothing is written."""
    processor = catalog.get_version(batch["processor"], batch["processor_version"])
    report = ValidationReport()
    settlements, reasons, unfinished = [], Counter(), set()
    table, unpriced = usable_prices()  # one table for the whole batch: its costs and the version they carry
    for row in store.batches.stored_results(batch["id"]):
        item = _item_from_row(row)
        if item.outcome == ResultOutcome.REQUEUE:
            unfinished.add(row["job_id"])
        verdict = validate_result(item, processor)
        cost = None
        # Moderations report no usage and are free: an answered one is still booked, at 0 USD.
        answered_free = processor.endpoint == "moderations" and item.outcome is ResultOutcome.SUCCEEDED
        if item.usage.input_tokens or item.usage.output_tokens or answered_free:
            try:
                cost = cost_usd(Provider(batch["provider"]), batch["model"], item.usage, batch=True, table=table)
            except NoPrice as exc:
                unpriced = exc
        settlements.append(_settlement(row, item, verdict, cost, processor))
        if not verdict.accepted:
            reasons[verdict.reason.split(":")[0]] += 1
            if len(report.samples) < 5:
                report.samples.append({"job": row["job_id"], "reason": verdict.reason[:120]})
        elif len(report.accepted_preview) < 5:
            report.accepted_preview.append({"job": row["job_id"], **verdict.output})
    if unpriced is not None:
        log.warning("batch %s: %s; its tokens are booked without a cost", batch["id"], unpriced)
    report.reasons = dict(reasons)
    return Judgement(limit_repairs(store, processor, settlements), table.version, unfinished, report)


def close_validation(store: ForgeStore, batch_id: int, judgement: Judgement, states: Mapping[int, str]) -> ValidationReport:
    """After settling: the report's usage, cost and states of the jobs that moved (`states`), and the batch
    marked collected once none of its jobs waits for a result or a verdict."""
    report, usage = judgement.report, Counter()
    for s in judgement.settlements:
        if s.job_id in states and s.usage:
            usage.update(s.usage)
            report.cost_usd += float(s.cost_usd or 0)
    if not store.batches.members_in(batch_id, ("submitted", "collected")):
        store.batches.mark_collected(batch_id)
    report.by_state = dict(Counter(states.values()))
    report.usage = dict(usage)
    return report


def validate_batch(store: ForgeStore, catalog: ProcessorCatalog, batch_id: int) -> ValidationReport:
    """Validate every stored result of the batch against its processor and settle the jobs once.
    Collecting or validating a batch again books nothing twice."""
    batch = store.batches.get(batch_id)
    judgement = judge_batch(store, catalog, batch)  # repairs stop at their bound
    with store.transaction() as conn:  # the settling and its notifications commit together
        states = store.batches.settle(batch, judgement.settlements, from_states=["collected"],
                                      pricing_version=judgement.pricing_version, conn=conn)
        store.outbox.write(batch_messages(batch, judgement.settlements, states), conn=conn)
    return close_validation(store, batch_id, judgement, states)
