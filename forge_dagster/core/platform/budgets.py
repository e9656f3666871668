"""Budgets: a daily USD limit per processor, and one for everything together (scope '*').

Before a batch is submitted, each claimed request is priced at its worst case (its prompt at about four
characters a token, plus the full `max_tokens` of output, at the batch price). A request is admitted
only while every budget that covers it keeps that much headroom after what was booked today (UTC) and
what is still in flight (the estimates of admitted attempts not settled yet). The rest wait: back to
pending without spending an attempt, due again after `BUDGET_RECHECK_S`; the operator is told once per
scope and day through the outbox (topic `budget.exceeded`). A model without a price cannot be
checked against a budget, so its requests wait too (fail closed).

Admission runs in one transaction under a lock, so two builders never spend the same headroom.

Realtime workers admit the jobs they claim the same way (`realtime=True`): an attempt is priced at the
realtime price and at its worst case with every repair call it may make; jobs held back are released by
the worker (their lease is the worker's), and the operator is told as for batches.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from forge_dagster.core.models import ProviderRequest, Usage
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.pricing import NoPrice, cost_usd
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.store.cost_store import ALL_SCOPE

log = logging.getLogger(__name__)

BUDGET_RECHECK_S = 300.0
CHARS_PER_TOKEN = 4


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens of a request body, estimated from its characters (messages, system, schema)."""
    parts = [body.get(k) for k in ("messages", "system", "tools", "response_format", "instructions", "input", "text")]
    chars = sum(len(json.dumps(p, ensure_ascii=False)) for p in parts if p)
    return math.ceil(chars / CHARS_PER_TOKEN)


def estimate_cost(processor: Processor, request: ProviderRequest, *, batch: bool = True) -> Decimal:
    """The most `request` can cost: its estimated prompt plus `max_tokens` of output. Raises
    NoPrice when the model has no price."""
    usage = Usage(input_tokens=estimate_input_tokens(request.body), output_tokens=_output_budget(processor, request))
    return cost_usd(processor.provider, processor.model, usage, batch=batch)


def _output_budget(processor: Processor, request: ProviderRequest) -> int:
    """The most output tokens a request may be billed (0 for embeddings and moderations)."""
    body = request.body
    return int(body.get("max_tokens") or body.get("max_output_tokens") or processor.max_tokens or 0)


REPAIR_TURN_TOKENS = 200  # a repair turn's errors and instruction, generously


def estimate_attempt_cost(processor: Processor, request: ProviderRequest, *, realtime: bool = False) -> Decimal:
    """The most one attempt can cost. A batch attempt is one request at the batch price (a repair is a
    later attempt, admitted then). A realtime attempt repairs in place: up to `max_repair_attempts` more
    calls, each quoting up to that many earlier answers, at the realtime price."""
    if not realtime:
        return estimate_cost(processor, request)
    repairs = processor.max_repair_attempts
    output = _output_budget(processor, request)
    per_call = estimate_input_tokens(request.body) + repairs * (output + REPAIR_TURN_TOKENS)
    usage = Usage(input_tokens=(1 + repairs) * per_call, output_tokens=(1 + repairs) * output)
    return cost_usd(processor.provider, processor.model, usage, batch=False)


@dataclass
class _ScopeHold:
    count: int = 0
    reason: str = ""
    processors: set[str] = field(default_factory=set)


@dataclass
class BudgetCheck:
    """The outcome of admission: what goes on to shaping, what waits, and what the operator is told."""

    admitted: list[tuple[Any, ProviderRequest]]
    held: list[tuple[Any, str]] = field(default_factory=list)  # (job, reason)
    messages: list[str] = field(default_factory=list)


def _money(value: Decimal) -> str:
    return f"${Decimal(value).quantize(Decimal('0.000001')).normalize():f}"


def admit_within_budgets(
    store,
    catalog: ProcessorCatalog,
    items: Sequence[tuple[Any, ProviderRequest]],
    jobs_by_custom_id: Mapping[str, Any],
    *,
    recheck_s: float = BUDGET_RECHECK_S,
    realtime: bool = False,
) -> BudgetCheck:
    """Admit rendered (group key, request) items within the budgets; hold the rest (see module doc).
    With no budget set this reads one small table and admits everything. Batch jobs held are put back
    to pending here; realtime ones (`realtime`) are left for the worker to release."""
    costs = store.costs
    check = BudgetCheck(admitted=[])
    holds: dict[str, _ScopeHold] = {}
    with costs.budget_window() as window:
        if not window.budgets:
            check.admitted = list(items)
            return check
        remaining = {scope: window.remaining(scope) for scope in window.budgets}
        reserve = []
        for key, request in items:
            job = jobs_by_custom_id[request.custom_id]
            name = key.processor_name
            scopes = [s for s in (name, ALL_SCOPE) if s in window.budgets]
            if not scopes:
                check.admitted.append((key, request))
                continue
            try:
                estimate = estimate_attempt_cost(catalog.get_version(name, key.processor_version), request,
                                                 realtime=realtime)
            except NoPrice as exc:
                reason = f"waiting: {exc}, so budget {scopes[0]!r} cannot be checked"
                over = scopes[:1]
            else:
                over = [s for s in scopes if remaining[s] < estimate]
                if not over:
                    for s in scopes:
                        remaining[s] -= estimate
                    reserve.append((job.id, job.attempt, name, estimate))
                    check.admitted.append((key, request))
                    continue
                s = over[0]
                reason = (f"waiting: daily budget {s!r} of {_money(window.budgets[s])} would be exceeded "
                          f"({_money(window.spent.get(s, Decimal(0)))} booked today, "
                          f"{_money(window.in_flight.get(s, Decimal(0)))} in flight, "
                          f"up to {_money(estimate)} for this request)")
            check.held.append((job, reason))
            hold = holds.setdefault(over[0], _ScopeHold(reason=reason))
            hold.count += 1
            hold.processors.add(name)
        window.reserve(reserve)
    if check.held:
        alerts = [(scope, h.count, {"held_jobs": h.count, "processors": sorted(h.processors),
                                    "limit_usd": str(window.budgets[scope]), "message": h.reason})
                  for scope, h in holds.items()]
        _, told = costs.hold([] if realtime else check.held, delay_s=recheck_s, alerts=alerts)
        for scope, h in holds.items():
            note = " (operator told)" if scope in told else ""
            check.messages.append(f"budget {scope!r}: {h.count} jobs wait{note}; {h.reason}")
            log.warning("budget %r holds %d jobs: %s", scope, h.count, h.reason)
    return check
