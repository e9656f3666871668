"""What work would cost before it is sent: tokens per request, the cost at realtime and batch prices, with
and without prompt caching, and whether today's budgets admit it.

Each job is rendered exactly as it would be sent; its prompt is counted locally (tokens.py: tiktoken for
OpenAI where it can load, else about four characters a token) and its output is taken at its worst case,
the processor's full `max_tokens` (0 for embeddings and moderations), as budget admission prices it.
"With caching" assumes one cache per processor version: the first request writes the shared prefix
(Anthropic: at 1.25x input for a 5-minute TTL, 2x for 1 hour; OpenAI writes at no premium) and every later
one reads it, when that prefix is long enough for the provider to cache (1,024 tokens; 2,048 for Claude
Haiku models). It is shown for every chat processor, whether or not it sets `cache:` yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from forge_dagster.core.models import JobSpec, Provider, Usage
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.pricing import NoPrice, cost_usd
from forge_dagster.core.platform.processors import Processor, TemplateError
from forge_dagster.core.platform.tokens import prompt_parts, token_counter
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.store.cost_store import ALL_SCOPE

_PRICE_CLASSES = ("realtime_usd", "batch_usd", "realtime_cached_usd", "batch_cached_usd")


def min_cacheable_tokens(provider: Provider | str, model: str) -> int:
    """The shortest prefix the provider's prompt cache keeps."""
    return 2048 if str(provider) == Provider.ANTHROPIC and "haiku" in model else 1024


@dataclass
class ProcessorEstimate:
    """One processor version's share of the work."""

    processor: str
    version: str
    provider: str
    model: str
    mode: str
    caches: bool  # the processor sets `cache:`
    tokenizer: str
    requests: int = 0
    input_tokens: int = 0
    prefix_tokens: int = 0  # the shared prefix of one request (what a cache would keep)
    output_tokens: int = 0  # worst case: max_tokens per request
    priced: bool = True
    realtime_usd: Decimal = Decimal(0)
    batch_usd: Decimal = Decimal(0)
    realtime_cached_usd: Decimal = Decimal(0)
    batch_cached_usd: Decimal = Decimal(0)

    @property
    def spend_usd(self) -> Decimal:
        """What the processor's own lane would be charged (batch for batch work, realtime otherwise)."""
        return self.batch_usd if self.mode == "batch" else self.realtime_usd

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not isinstance(v, Decimal)}
        return {**out, **{k: float(getattr(self, k)) for k in _PRICE_CLASSES},
                "tokens_per_request": round(self.input_tokens / self.requests, 1) if self.requests else 0}


@dataclass
class BudgetVerdict:
    scope: str
    limit_usd: Decimal
    remaining_usd: Decimal
    estimate_usd: Decimal
    admits: bool

    def describe(self) -> str:
        verdict = "admits" if self.admits else "would refuse"
        return (f"budget {self.scope!r} {verdict} it: estimated ${self.estimate_usd:.6f} (worst case) against "
                f"${self.remaining_usd:.6f} left today of ${self.limit_usd:.6f}")


@dataclass
class Estimate:
    """The estimate of a set of jobs, per processor, with the budget verdicts and the inputs refused."""

    processors: list[ProcessorEstimate] = field(default_factory=list)
    budgets: list[BudgetVerdict] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # jobs that cannot be rendered, with their reason

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.processors)

    def total(self, price_class: str) -> Decimal:
        return sum((getattr(p, price_class) for p in self.processors), Decimal(0))

    @property
    def admitted(self) -> bool:
        return all(b.admits for b in self.budgets)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "processors": [p.as_dict() for p in self.processors],
                "total": {k: float(self.total(k)) for k in _PRICE_CLASSES},
                "budgets": [{**b.__dict__, "limit_usd": float(b.limit_usd), "remaining_usd": float(b.remaining_usd),
                             "estimate_usd": float(b.estimate_usd), "message": b.describe()} for b in self.budgets],
                "admitted": self.admitted, "unpriced": [p.processor for p in self.processors if not p.priced],
                "refused": self.refused}


def _cached_usage(processor: Processor, usage: Usage, prefix: int, first: bool) -> Usage:
    if prefix < min_cacheable_tokens(processor.provider, processor.model or "") or processor.fixed_output:
        return usage
    if processor.provider == Provider.OPENAI:  # OpenAI: no write premium; reads in 128-token steps
        return usage if first else Usage(usage.input_tokens, usage.output_tokens, prefix // 128 * 128)
    if not first:
        return Usage(usage.input_tokens, usage.output_tokens, cached_input_tokens=prefix)
    ttl = processor.cache.ttl if processor.cache is not None else "5m"
    return Usage(usage.input_tokens, usage.output_tokens, **{f"cache_write_{ttl}_tokens": prefix})


def _add_request(row: ProcessorEstimate, processor: Processor, body: Mapping[str, Any], count) -> None:
    prefix_text, rest_text = prompt_parts(body)
    prefix = count(prefix_text)
    output = 0 if processor.fixed_output else int(processor.max_tokens or 0)
    usage = Usage(input_tokens=prefix + count(rest_text), output_tokens=output)
    cached = _cached_usage(processor, usage, prefix, first=row.requests == 0)
    row.requests += 1
    row.input_tokens += usage.input_tokens
    row.prefix_tokens = prefix
    row.output_tokens += output
    if not row.priced:
        return
    try:
        for name, use, batch in (("realtime_usd", usage, False), ("batch_usd", usage, True),
                                 ("realtime_cached_usd", cached, False), ("batch_cached_usd", cached, True)):
            setattr(row, name, getattr(row, name) + cost_usd(processor.provider, processor.model, use, batch=batch))
    except NoPrice:
        row.priced = False


def estimate_jobs(catalog: ProcessorCatalog, specs: Iterable[JobSpec]) -> Estimate:
    """Render and price each job (see the module docstring); handler steps cost nothing and are left out."""
    estimate = Estimate()
    rows: dict[tuple[str, str], tuple[ProcessorEstimate, Any]] = {}
    for n, spec in enumerate(specs):
        try:
            processor = catalog.get_version(spec.processor, spec.processor_version)
        except KeyError:
            estimate.refused.append(f"job {n}: unknown processor {spec.processor!r}")
            continue
        if processor.handler is not None:
            continue
        if processor.key not in rows:
            count, method = token_counter(processor.provider, processor.model or "")
            rows[processor.key] = (ProcessorEstimate(
                processor.name, processor.version, str(processor.provider), processor.model or "",
                processor.mode, processor.cache is not None, method), count)
        row, count = rows[processor.key]
        try:
            request = render_request(processor, spec.payload, f"estimate-{n}")
        except (TemplateError, ValueError) as exc:
            estimate.refused.append(f"job {n}: {exc}")
            continue
        _add_request(row, processor, request.body, count)
    estimate.processors = [row for row, _ in rows.values() if row.requests]
    return estimate


def judge_budgets(estimate: Estimate, budgets: Mapping[str, Decimal], spent: Mapping[str, Decimal],
                  in_flight: Mapping[str, Decimal]) -> Estimate:
    """Set each budget's verdict on the estimate: its scope's share (at each processor's own lane's price,
    worst case) against what is left today after bookings and work in flight. An unpriced processor under
    a budget cannot be admitted (as admission itself refuses it)."""
    verdicts = []
    for scope, limit in sorted(budgets.items()):
        covered = [p for p in estimate.processors if scope in (p.processor, ALL_SCOPE)]
        if not covered:
            continue
        share = sum((p.spend_usd for p in covered), Decimal(0))
        remaining = Decimal(limit) - Decimal(spent.get(scope, 0)) - Decimal(in_flight.get(scope, 0))
        verdicts.append(BudgetVerdict(scope, Decimal(limit), remaining, share,
                                      share <= remaining and all(p.priced for p in covered)))
    estimate.budgets = verdicts
    return estimate


def estimate_with_budgets(store, catalog: ProcessorCatalog, specs: Iterable[JobSpec]) -> Estimate:
    """`estimate_jobs`, judged against the store's budgets, today's bookings and the work in flight."""
    estimate = estimate_jobs(catalog, specs)
    budgets = store.costs.budgets()
    if budgets:
        spent, in_flight = store.costs.usage_today()
        judge_budgets(estimate, budgets, spent, in_flight)
    return estimate
