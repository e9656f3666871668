"""Cost reports from the ledger (by processor, provider/model or UTC day; a day-by-model table and
chart), and the reconciliation of OpenAI batches: the per-request sum against the batch's own usage.

The ledger (`costs`) has one row per billed job attempt, booked once when the attempt settles. OpenAI
reports a batch's total usage on the batch object; reconciling compares it with the sum of the batch's
stored result lines and with its ledger rows, so a line that never came back, or an attempt that was
never booked, shows up as a difference. Anthropic's Message Batches carry no batch-level usage, so
only OpenAI batches are reconciled.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd

from forge_dagster.core.models import Provider, ProviderError, Usage
from forge_dagster.core.platform.pricing import NoPrice, cost_usd, uncached_cost_usd
from forge_dagster.core.providers.errors import classify

log = logging.getLogger(__name__)

GROUPINGS = ("processor", "model", "day")
TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def since(days: int | None) -> datetime:
    """The start of the window covering the last `days` UTC days (today included); all time when None."""
    if days is None:
        return _EPOCH
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=max(days, 1) - 1)


def cost_table(store, by: str = "processor", days: int | None = None) -> list[dict[str, Any]]:
    """Ledger totals grouped `by` processor, model (provider/model) or day: attempts, tokens, USD, and the
    attempts booked without a price (their tokens are counted, their cost is not known)."""
    rows = store.costs.costs_by(by, since(days))
    return [{by: r["key"], "attempts": int(r["attempts"]), **{f: int(r[f]) for f in TOKEN_FIELDS},
             "cost_usd": float(r["cost_usd"]), "unpriced_attempts": int(r["unpriced_attempts"])} for r in rows]


def cache_report(store, days: int | None = None) -> list[dict[str, Any]]:
    """Per processor: the cache hit rate (attempts that read the prompt cache), the tokens read and written,
    and what caching saved: the cost of the same usage with every input token at the plain input price,
    less its cost (writes cost more than plain input, so a cache that is written and never read saves a
    negative amount). Priced at the active table; models without a price add nothing to the saving."""
    totals: dict[str, dict[str, Any]] = {}
    for r in store.costs.cache_by_processor(since(days)):
        row = totals.setdefault(r["processor"], {"processor": r["processor"], "attempts": 0, "cache_hits": 0,
                                                 "cache_read_tokens": 0, "cache_write_tokens": 0,
                                                 "saved_usd": Decimal(0)})
        usage = Usage(input_tokens=int(r["input_tokens"]), output_tokens=int(r["output_tokens"]),
                      cached_input_tokens=int(r["cached_input_tokens"]),
                      cache_write_5m_tokens=int(r["cache_write_5m_tokens"]),
                      cache_write_1h_tokens=int(r["cache_write_1h_tokens"]))
        row["attempts"] += int(r["attempts"])
        row["cache_hits"] += int(r["cache_hits"])
        row["cache_read_tokens"] += usage.cached_input_tokens
        row["cache_write_tokens"] += usage.cache_write_tokens
        try:
            row["saved_usd"] += (uncached_cost_usd(r["provider"], r["model"], usage, batch=r["batch_priced"])
                                 - cost_usd(r["provider"], r["model"], usage, batch=r["batch_priced"]))
        except NoPrice:
            pass
    return [{**row, "cache_hit_rate": round(row["cache_hits"] / row["attempts"], 4) if row["attempts"] else 0.0,
             "saved_usd": float(row["saved_usd"])} for row in totals.values()]


def cost_by_day_and_model(store, days: int | None = 30) -> pd.DataFrame:
    """USD per UTC day (rows) and provider/model (columns), zero where nothing was booked."""
    rows = store.costs.costs_by_day_and_model(since(days))
    if not rows:
        return pd.DataFrame(dtype=float)
    frame = pd.DataFrame({"day": [r["day"] for r in rows],
                          "model": [f"{r['provider']}/{r['model']}" for r in rows],
                          "cost_usd": [float(r["cost_usd"]) for r in rows]})
    table = frame.pivot_table(index="day", columns="model", values="cost_usd", aggfunc="sum", fill_value=0.0)
    table.columns.name = None
    return table.sort_index()


def cost_markdown(table: pd.DataFrame) -> str:
    """The day-by-model table as markdown, with a total column and a total row."""
    if table.empty:
        return "_No costs booked in this window._"
    shown = table.copy()
    shown["total"] = shown.sum(axis=1)
    shown.loc["total"] = shown.sum(axis=0)
    return shown.map(lambda v: f"${v:,.4f}").to_markdown()


def cost_chart_png(table: pd.DataFrame, *, title: str = "Cost per day and model (USD)") -> bytes:
    """A stacked bar chart of the day-by-model table, as PNG bytes (matplotlib's Agg canvas, no GUI)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.5), dpi=100)
    axes = figure.add_subplot()
    if table.empty:
        axes.text(0.5, 0.5, "no costs booked", ha="center", va="center", transform=axes.transAxes)
    else:
        bottom = [0.0] * len(table.index)
        for model in table.columns:
            values = table[model].tolist()
            axes.bar(list(table.index), values, bottom=bottom, label=model)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        axes.legend(fontsize="small")
        axes.tick_params(axis="x", labelrotation=45)
    axes.set_title(title)
    axes.set_ylabel("USD")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# -- reconciliation ------------------------------------------------------------------------------


@dataclass
class Reconciliation:
    batch_id: int
    provider_batch_id: str
    matched: bool
    ledger: dict[str, Any]
    results: dict[str, Any]
    provider_usage: dict[str, int] | None
    notes: list[str] = field(default_factory=list)


def openai_batch_usage(port, provider_batch_id: str) -> dict[str, int] | None:
    """The usage OpenAI reports on the batch object (None when it reports none), through the official
    client with the port's own credentials."""
    import openai

    creds = port.credentials
    client = openai.OpenAI(api_key=creds.get_secret_value(), base_url=creds.base_url, timeout=creds.timeout_s,
                           max_retries=2)
    try:
        usage = client.batches.retrieve(provider_batch_id).usage
    except Exception as exc:
        raise classify(exc) from exc
    finally:
        client.close()
    if usage is None:
        return None
    details_in, details_out = usage.input_tokens_details, usage.output_tokens_details
    return {"input_tokens": usage.input_tokens,
            "cached_input_tokens": getattr(details_in, "cached_tokens", 0) or 0,
            "output_tokens": usage.output_tokens,
            "reasoning_tokens": getattr(details_out, "reasoning_tokens", 0) or 0}


def _differences(name: str, ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    return [f"{name} {f} {ours[f]} vs provider {theirs[f]} ({int(ours[f]) - int(theirs[f]):+d})"
            for f in TOKEN_FIELDS if int(ours[f]) != int(theirs[f])]


def reconcile_batch(store, port, batch_id: int) -> Reconciliation:
    """Compare one collected OpenAI batch's ledger rows and stored lines with the batch's usage, and
    record the outcome (recording again replaces it)."""
    batch = store.batches.get(batch_id)
    if batch is None or batch["provider"] != Provider.OPENAI or not batch["provider_batch_id"]:
        raise ValueError(f"batch {batch_id} is not a submitted OpenAI batch")
    ledger, results = store.costs.batch_sums(batch_id)
    usage = openai_batch_usage(port, batch["provider_batch_id"])
    if usage is None:
        notes, matched = ["the provider reports no usage for this batch"], False
    else:
        notes = _differences("ledger", ledger, usage) + _differences("result lines", results, usage)
        matched = not notes
    found = Reconciliation(batch_id, batch["provider_batch_id"], matched, ledger, results, usage, notes)
    store.costs.record_reconciliation({
        "batch_id": batch_id, "provider": batch["provider"], "provider_batch_id": batch["provider_batch_id"],
        "ledger": ledger, "results": results, "provider_usage": usage, "matched": matched,
        "note": "; ".join(notes) or None})
    if not matched:
        log.warning("batch %s does not reconcile: %s", batch_id, "; ".join(notes))
    return found


def reconcile_collected(store, ports: Mapping[Provider, Any], *, limit: int = 100) -> list[Reconciliation]:
    """Reconcile collected OpenAI batches not reconciled yet (none when no OpenAI port is configured).
    A provider error leaves that batch for the next pass."""
    if Provider.OPENAI not in ports:
        return []
    done = []
    for batch_id in store.costs.unreconciled(Provider.OPENAI, limit):
        try:
            done.append(reconcile_batch(store, ports[Provider.OPENAI], batch_id))
        except ProviderError as exc:
            log.warning("batch %s: usage not available yet: %s", batch_id, exc)
    return done


def ledger_summary(store, days: int | None = None) -> dict[str, Any]:
    """Rows, USD and rows without a price in the ledger for the window, as plain numbers."""
    rows, total, unpriced = store.costs.ledger_total(since(days))
    return {"attempts": rows, "cost_usd": float(Decimal(total)), "unpriced_attempts": unpriced}
