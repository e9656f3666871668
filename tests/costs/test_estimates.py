"""Estimates before spending: tokens and cost per request at realtime and batch prices, with and without
caching, from the request as it would be sent; the budget's verdict names the estimate; nothing is written."""

from __future__ import annotations

import json
from decimal import Decimal

from forge_dagster import Forge
from forge_dagster.core.models import JobSpec, Usage
from forge_dagster.core.platform.estimates import estimate_jobs, estimate_with_budgets
from forge_dagster.core.platform.pricing import cost_usd
from forge_dagster.core.platform.tokens import approximate_tokens, prompt_parts
from forge_dagster.core.providers.requests import render_request


def tickets(n: int, processor: str = "cached_tickets") -> list[JobSpec]:
    return [JobSpec(processor, {"subject": f"Ticket {i}", "body": "Export does nothing."}, processor_version="1.0.0")
            for i in range(n)]


def test_an_estimate_prices_the_rendered_requests_at_realtime_and_batch_with_and_without_caching(catalog):
    estimate = estimate_jobs(catalog, tickets(4))
    [row] = estimate.processors
    processor = catalog["cached_tickets"]
    bodies = [render_request(processor, s.payload, "x").body for s in tickets(4)]
    parts = [prompt_parts(b) for b in bodies]
    prefix = approximate_tokens(parts[0][0])  # no tiktoken encoding offline: the documented approximation
    if row.tokenizer.startswith("approx"):
        assert row.prefix_tokens == prefix > 1024
        assert row.input_tokens == sum(approximate_tokens(p) + approximate_tokens(r) for p, r in parts)
    assert row.requests == 4 and row.output_tokens == 4 * processor.max_tokens and row.caches

    # Priced per request (each rounded to 1e-8): within 4e-8 of the whole usage priced by hand.
    close = Decimal("0.00000004")
    whole = Usage(row.input_tokens, row.output_tokens)
    assert abs(row.realtime_usd - cost_usd("openai", "gpt-4o-mini", whole, batch=False)) <= close
    assert abs(row.batch_usd - cost_usd("openai", "gpt-4o-mini", whole, batch=True)) <= close
    # With caching: the first request writes (no premium at OpenAI), the next three read the prefix.
    reads = Usage(row.input_tokens, row.output_tokens, cached_input_tokens=3 * (row.prefix_tokens // 128 * 128))
    assert abs(row.realtime_cached_usd - cost_usd("openai", "gpt-4o-mini", reads, batch=False)) <= close
    assert row.realtime_cached_usd < row.realtime_usd and row.batch_cached_usd < row.batch_usd


def test_a_short_prefix_gains_nothing_from_caching_and_bad_input_is_listed_not_priced(catalog):
    specs = [*tickets(3, "ticket_triage"), JobSpec("ticket_triage", {"subject": "no body"}, processor_version="1.0.0")]
    estimate = estimate_jobs(catalog, specs)
    [row] = estimate.processors
    assert row.requests == 3 and not row.caches
    assert row.realtime_cached_usd == row.realtime_usd  # the demo's system prompt is under 1,024 tokens
    assert len(estimate.refused) == 1 and "body" in estimate.refused[0]


def test_a_budget_that_would_refuse_the_work_names_the_estimate(store, catalog, forge_cli, tmp_path):
    store.costs.set_budget("cached_tickets", "0.0001")
    estimate = estimate_with_budgets(store, catalog, tickets(20))
    [verdict] = estimate.budgets
    assert not estimate.admitted and not verdict.admits
    assert verdict.estimate_usd == estimate.processors[0].batch_usd  # a batch processor: the batch price
    assert f"estimated ${verdict.estimate_usd:.6f} (worst case)" in verdict.describe()

    path = tmp_path / "work.jsonl"
    path.write_text("".join(json.dumps({"processor": s.processor, "input": s.payload}) + "\n" for s in tickets(20)))
    code, out = forge_cli("estimate", str(path))
    assert code == 3 and "budget 'cached_tickets' would refuse it: estimated $" in out
    code, out = forge_cli("estimate", str(path), "--json")
    assert code == 3 and json.loads(out)["requests"] == 20
    store.costs.set_budget("cached_tickets", "100")
    code, out = forge_cli("estimate", str(path))
    assert code == 0 and "budget 'cached_tickets' admits it" in out
    assert store.jobs.counts() == {}  # nothing was submitted


def test_the_python_client_estimates_rows_without_submitting_them(store, catalog):
    client = Forge(store)
    estimate = client.estimate("cached_tickets", [s.payload for s in tickets(3)])
    assert estimate.requests == 3 and estimate.admitted and estimate.total("batch_usd") > 0
    assert store.jobs.counts() == {}
