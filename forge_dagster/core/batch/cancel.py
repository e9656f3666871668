"""An operator's cancel of a provider batch: ask the provider to cancel, wait (bounded) until it reports
the batch ended, harvest what finished exactly as collection does (fail closed: only validated outputs
succeed), and settle the jobs the provider did not run per `then`: `requeue` (back to pending with the
attempt given back) or `cancel` (terminal `cancelled`). One `operator_actions` row records it.

Bad input changes nothing: an unknown batch, a batch that already ended or was collected, one whose
submission has not reached the provider, a bad `then` or no reason each raise OperatorError before the
provider is asked. A job the pipeline's own collection settled first is left as it settled it and
reported as skipped: the settlement's guard (batch, custom_id, collected) lets one of them win, never both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from forge_dagster.core.batch.collection import close_validation, collect_results, judge_batch
from forge_dagster.core.models import BatchState, BatchStatus, Provider, ProviderError
from forge_dagster.core.ops.notify import batch_messages
from forge_dagster.core.ops.operator import OperatorError, operator_name
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.providers.base import ProviderPort
from forge_dagster.core.providers.quota import batch_port
from forge_dagster.core.store import ForgeStore

THEN_CHOICES = ("requeue", "cancel")
CANCELLABLE = (BatchState.IN_PROGRESS, BatchState.CANCELLING)
DEFAULT_WAIT_S = 120.0


@dataclass
class BatchCancelReport:
    """What a batch cancel did: the provider's ending, the jobs it moved now (by new state) and the ones
    it left alone with why."""

    batch_id: int
    forge_batch_id: str
    provider: str
    provider_batch_id: str
    then: str
    ended: bool = False
    provider_state: str = ""
    changed: dict[int, str] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    cost_usd: float = 0.0
    action_id: int | None = None

    def by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.changed.values():
            counts[state] = counts.get(state, 0) + 1
        return dict(sorted(counts.items()))

    def as_dict(self) -> dict[str, Any]:
        return {"action": "cancel_batch", "batch_id": self.batch_id, "forge_batch_id": self.forge_batch_id,
                "provider": self.provider, "provider_batch_id": self.provider_batch_id, "then": self.then,
                "ended": self.ended, "provider_state": self.provider_state, "changed": len(self.changed),
                "jobs_by_state": self.by_state(), "cost_usd": round(self.cost_usd, 8),
                "jobs": [{"id": i, "state": s} for i, s in sorted(self.changed.items())],
                "skipped": [{"id": i, "why": why} for i, why in self.skipped], "action_id": self.action_id}


def find_batch(store: ForgeStore, ref: str | int) -> dict[str, Any]:
    """The batch (hot or archived) `ref` names: Forge's batch id, its forge batch id (fb_...) or the
    provider's batch id. Raises OperatorError when none does, or several do (give Forge's id then)."""
    ids = store.batches.find(ref)
    if not ids:
        raise OperatorError(f"no batch with id, forge batch id or provider batch id {str(ref).strip()}")
    if len(ids) > 1:
        raise OperatorError(f"{ref} names several batches ({', '.join(map(str, ids))}): give Forge's batch id")
    return store.operations.find_batch(ids[0])


def _refusal(batch: Mapping[str, Any]) -> str | None:
    """Why `batch` cannot be cancelled (None when it can)."""
    state, bid = batch["state"], batch["id"]
    if batch.get("archived") or state in (BatchState.COLLECTED, BatchState.ARCHIVED):
        return f"batch {bid} was already collected: every job in it has settled, there is nothing to cancel"
    if state.startswith("ended_"):
        return (f"batch {bid} already ended at the provider ({state}): the pipeline collects it, harvesting "
                "what finished and requeueing the rest; cancel its jobs (forge jobs cancel) instead")
    if state not in CANCELLABLE or not batch.get("provider_batch_id"):
        return (f"batch {bid} is {state}: its submission has not reached the provider yet; "
                "try again once it is in_progress")
    return None


def _record_status(store: ForgeStore, batch_id: int, status: BatchStatus) -> bool:
    counts = {k: getattr(status.counts, k) for k in ("total", "processing", "succeeded", "errored", "expired",
                                                      "canceled")}
    return store.batches.update_status(batch_id, str(status.state), counts, status.raw_status)


def _ask_provider(port: ProviderPort, provider_batch_id: str) -> BatchStatus:
    """Ask the provider to cancel. A refusal is fine when the batch had ended already (its status says so);
    otherwise OperatorError (nothing changed)."""
    try:
        return port.cancel(provider_batch_id)
    except ProviderError as exc:
        try:
            status = port.status(provider_batch_id)
        except ProviderError:
            status = None
        if status is None or not status.ended:
            raise OperatorError(f"the provider refused to cancel batch {provider_batch_id}: {exc}; "
                                "nothing changed") from None
        return status


def _wait_ended(port: ProviderPort, status: BatchStatus, wait_s: float,
                sleep: Callable[[float], None]) -> BatchStatus:
    """The batch's status once the provider reports it ended, or the last one read when `wait_s` passed
    (a read that fails is tried again until then)."""
    deadline, pause = time.monotonic() + wait_s, 0.2
    while not status.ended and time.monotonic() < deadline:
        sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 2.0)
        try:
            status = port.status(status.provider_batch_id)
        except ProviderError:
            continue
    return status


def cancel_batch(store: ForgeStore, catalog: ProcessorCatalog, ports: Mapping[Provider, ProviderPort],
                 ref: str | int, *, then: str = "requeue", reason: str | None = None, actor: str | None = None,
                 wait_s: float = DEFAULT_WAIT_S, sleep: Callable[[float], None] = time.sleep) -> BatchCancelReport:
    """Cancel the in-flight batch `ref` names (see `find_batch`) and settle its jobs: finished ones through
    validation, the ones the provider did not run per `then` (requeue: pending, attempt unspent; cancel:
    `cancelled`). When the provider has not ended the batch within `wait_s`, the report says so
    (`ended` False) and the pipeline collects it once it ends."""
    if not reason or not reason.strip():
        raise OperatorError("say why (--reason): it is recorded with the batch's jobs the cancel settles")
    if then not in THEN_CHOICES:
        raise OperatorError(f"--then is requeue or cancel, not {then!r}")
    reason, who = reason.strip()[:500], operator_name(actor)
    batch = find_batch(store, ref)
    refusal = _refusal(batch)
    if refusal:
        raise OperatorError(f"{refusal}; nothing changed")
    report = BatchCancelReport(batch["id"], batch["forge_batch_id"], batch["provider"], batch["provider_batch_id"],
                               then)
    port = batch_port(store, ports, batch)
    status = _ask_provider(port, batch["provider_batch_id"])
    _record_status(store, batch["id"], status)
    status = _wait_ended(port, status, wait_s, sleep)
    report.ended, report.provider_state = status.ended, str(status.state)
    selector = {"batch_id": batch["id"], "forge_batch_id": batch["forge_batch_id"],
                "provider_batch_id": batch["provider_batch_id"], "then": then}
    if not status.ended:
        with store.transaction() as conn:
            report.action_id = store.batches.record_cancel(
                actor=who, reason=reason, selector={**selector, "ended": False}, changed=0,
                skipped=[{"batch": batch["id"], "why": f"the provider was still {status.raw_status} after "
                          f"{wait_s:.0f} s; the pipeline collects it when it ends"}], conn=conn)
        return report
    _record_status(store, batch["id"], status)
    _harvest(store, catalog, ports, batch["id"], report, selector, reason, who)
    return report


def _harvest(store: ForgeStore, catalog: ProcessorCatalog, ports: Mapping[Provider, ProviderPort], batch_id: int,
             report: BatchCancelReport, selector: dict[str, Any], reason: str, who: str) -> None:
    """Collect the ended batch's results, validate them and settle every job of it still waiting, with the
    operator's action recorded in the same transaction."""
    collect_results(store, ports, batch_id)
    batch = store.batches.get(batch_id)
    judgement = judge_batch(store, catalog, batch)
    unfinished = judgement.unfinished
    if report.then == "cancel":
        judgement.settlements = [
            replace(s, kind="cancelled", reason=f"cancelled with batch {batch_id}: {reason}")
            if s.job_id in unfinished else s for s in judgement.settlements]
    else:
        judgement.settlements = [s for s in judgement.settlements if s.job_id not in unfinished]
    judged = sorted({s.job_id for s in judgement.settlements} | unfinished)
    with store.transaction() as conn:  # the settling, its notices and the operator's record commit together
        states = store.batches.settle(batch, judgement.settlements, from_states=["collected"],
                                      pricing_version=judgement.pricing_version, conn=conn, actor=who)
        if report.then == "requeue" and unfinished:
            requeued = store.batches.requeue_unfinished(
                batch_id, sorted(unfinished), reason=f"batch {batch_id} cancelled, requeued with its attempt "
                f"given back: {reason}", actor=who, conn=conn)
            states.update({job_id: "pending" for job_id in requeued})
        store.outbox.write(batch_messages(batch, judgement.settlements, states), conn=conn)
        report.changed = states
        report.skipped = [(job_id, "settled before the cancel reached it (by the pipeline's collection)")
                          for job_id in judged if job_id not in states]
        report.action_id = store.batches.record_cancel(
            actor=who, reason=reason, selector={**selector, "ended": True, "provider_state": report.provider_state},
            changed=len(states), skipped=[{"job": i, "why": why} for i, why in report.skipped], conn=conn)
    report.cost_usd = close_validation(store, batch_id, judgement, states).cost_usd
