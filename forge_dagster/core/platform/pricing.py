"""What a request cost, from a versioned table of public list prices (USD per million tokens).

Usage convention (the provider ports normalise to it):
- `input_tokens` counts every prompt token, cached ones included (OpenAI's `prompt_tokens`; for Anthropic,
  `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`).
- `cached_input_tokens` is the part of `input_tokens` read from the prompt cache, billed at the cached price
  (Anthropic: 0.1x input; OpenAI: the model's cached price).
- `cache_write_5m_tokens` / `cache_write_1h_tokens` are the part of `input_tokens` written to Anthropic's
  prompt cache (its `cache_creation` split), billed at 1.25x input (5-minute TTL) and 2x input (1 hour).
  A provider that reports no split (only `cache_creation_input_tokens`) wrote with the default 5-minute TTL.
- `output_tokens` already includes reasoning tokens (OpenAI's `completion_tokens` does);
  `reasoning_tokens` is informational and never billed a second time.
The batch discount (50% at both providers) applies to every token class, cache reads and writes included.
Embeddings are priced per input token (their output price is 0; the batch discount applies); moderations
are free (every price 0), so their attempts are booked at 0 USD, never as unpriced.

A team adds or overrides prices in a YAML file named by `FORGE_PRICES_FILE` (a model the table lacks, a
negotiated rate): `version: <name>` and `prices: [{provider, model, input, output, cached_input?,
batch_discount?}]` (cache writes are priced from `input`: 1.25x and 2x). The file's prices win over the built-in ones, and the table's version becomes
`<built-in>+<file version>`, which every ledger row priced with it keeps.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

import yaml

from forge_dagster.core.config import load_settings
from forge_dagster.core.models import Provider, Usage

# Bump on every change to the table below: each ledger row keeps the version it was priced with.
PRICING_VERSION = "2026-12.2"  # .2: cache writes priced at 1.25x / 2x input
PRICES_FILE_ENV = "FORGE_PRICES_FILE"
_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.00000001")
CACHE_WRITE_5M = Decimal("1.25")  # Anthropic: a 5-minute cache write costs 1.25x the input price
CACHE_WRITE_1H = Decimal("2")  # ... a 1-hour write 2x


class NoPrice(Exception):
    """No price can be given (the model is not in the table, or the prices file is wrong): the attempt's
    tokens are booked without a cost, which is never guessed."""


class UnknownModelPrice(NoPrice, KeyError):
    """No price is known for this provider and model."""

    def __init__(self, provider: str, model: str, version: str) -> None:
        super().__init__(f"no price for {provider}/{model} in pricing table {version}")
        self.provider = provider
        self.model = model

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens, and the fraction taken off by the provider's batch API."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    batch_discount: Decimal = Decimal("0.5")


def _price(input_: str, cached: str, output: str) -> ModelPrice:
    return ModelPrice(Decimal(input_), Decimal(cached), Decimal(output))


_OPENAI = {
    "gpt-4o-mini": _price("0.15", "0.075", "0.60"),
    "gpt-4o": _price("2.50", "1.25", "10.00"),
    "gpt-4.1": _price("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": _price("0.40", "0.10", "1.60"),
    "gpt-4.1-nano": _price("0.10", "0.025", "0.40"),
    "o4-mini": _price("1.10", "0.275", "4.40"),
    "gpt-5-mini": _price("0.25", "0.025", "2.00"),
    # Embeddings: input tokens only.
    "text-embedding-3-small": _price("0.02", "0.02", "0"),
    "text-embedding-3-large": _price("0.13", "0.13", "0"),
    "text-embedding-ada-002": _price("0.10", "0.10", "0"),
    # Moderations: free.
    "omni-moderation-latest": _price("0", "0", "0"),
    "text-moderation-latest": _price("0", "0", "0"),
}
_OPENAI_SNAPSHOTS = {
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
    "gpt-4o-2024-08-06": "gpt-4o",
    "gpt-4o-2024-11-20": "gpt-4o",
    "gpt-4.1-2025-04-14": "gpt-4.1",
    "gpt-4.1-mini-2025-04-14": "gpt-4.1-mini",
    "gpt-4.1-nano-2025-04-14": "gpt-4.1-nano",
    "o4-mini-2025-04-16": "o4-mini",
    "gpt-5-mini-2025-08-07": "gpt-5-mini",
    "omni-moderation-2024-09-26": "omni-moderation-latest",
}
_ANTHROPIC = {
    "claude-3-5-haiku-latest": _price("0.80", "0.08", "4.00"),
    "claude-haiku-4-5": _price("1.00", "0.10", "5.00"),
    "claude-sonnet-4-5": _price("3.00", "0.30", "15.00"),
}
_ANTHROPIC_SNAPSHOTS = {
    "claude-3-5-haiku-20241022": "claude-3-5-haiku-latest",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
}

PRICES: dict[tuple[Provider, str], ModelPrice] = {
    **{(Provider.OPENAI, m): p for m, p in _OPENAI.items()},
    **{(Provider.OPENAI, m): _OPENAI[alias] for m, alias in _OPENAI_SNAPSHOTS.items()},
    **{(Provider.ANTHROPIC, m): p for m, p in _ANTHROPIC.items()},
    **{(Provider.ANTHROPIC, m): _ANTHROPIC[alias] for m, alias in _ANTHROPIC_SNAPSHOTS.items()},
}


class PricesFileError(NoPrice, ValueError):
    """The prices file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class PriceTable:
    version: str
    prices: dict[tuple[Provider, str], ModelPrice]


def _decimal(value: object, where: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise PricesFileError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise PricesFileError(f"{where}: {value!r} must be a number >= 0")
    return number


def _file_prices(path: Path) -> tuple[str, dict[tuple[Provider, str], ModelPrice]]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PricesFileError(f"{path}: cannot be read as YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), str | int | float) \
            or not isinstance(doc.get("prices"), list):
        raise PricesFileError(f"{path}: expected a mapping with `version` (text) and `prices` (a list)")
    prices = {}
    for i, entry in enumerate(doc["prices"]):
        where = f"{path}: prices[{i}]"
        if not isinstance(entry, dict):
            raise PricesFileError(f"{where}: expected a mapping")
        missing = [f for f in ("provider", "model", "input", "output") if f not in entry]
        if missing:
            raise PricesFileError(f"{where}: missing {', '.join(missing)}")
        try:
            provider = Provider(entry["provider"])
        except ValueError:
            raise PricesFileError(f"{where}.provider: unknown provider {entry['provider']!r}") from None
        input_ = _decimal(entry["input"], f"{where}.input")
        discount = _decimal(entry.get("batch_discount", "0.5"), f"{where}.batch_discount")
        if discount > 1:
            raise PricesFileError(f"{where}.batch_discount: {discount} is more than the whole price")
        prices[(provider, str(entry["model"]))] = ModelPrice(
            input_, _decimal(entry.get("cached_input", input_), f"{where}.cached_input"),
            _decimal(entry["output"], f"{where}.output"), discount)
    return str(doc["version"]), prices


@functools.lru_cache(maxsize=4)
def _table(path: str | None, _stamp: tuple[int, int]) -> PriceTable:
    if path is None:
        return PriceTable(PRICING_VERSION, PRICES)
    version, prices = _file_prices(Path(path))
    return PriceTable(f"{PRICING_VERSION}+{version}", {**PRICES, **prices})


def active_prices() -> PriceTable:
    """The built-in table, with the prices of FORGE_PRICES_FILE over it when set (re-read when the file
    changes). PricesFileError when that file is missing or wrong."""
    path = load_settings().prices_file or None
    if path is None:
        return _table(None, (0, 0))
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise PricesFileError(f"{PRICES_FILE_ENV}={path}: {exc.strerror}") from None
    return _table(path, (stat.st_mtime_ns, stat.st_size))  # a changed file is read again


def pricing_version() -> str:
    """The version of the active pricing table, as ledger rows record it."""
    return active_prices().version


def usable_prices() -> tuple[PriceTable, PricesFileError | None]:
    """The active table, or, while FORGE_PRICES_FILE cannot be used, a table that prices nothing (every
    attempt is then booked with its tokens and no cost, never guessed) and the reason. For the writers of
    the ledger, which must go on booking whatever the file says."""
    try:
        return active_prices(), None
    except PricesFileError as exc:
        return PriceTable(f"{PRICING_VERSION}+unusable {PRICES_FILE_ENV}", {}), exc


def _key(provider: Provider | str, model: str) -> tuple[Provider, str] | None:
    try:
        return (Provider(provider), model)
    except ValueError:
        return None


def has_price(provider: Provider | str, model: str) -> bool:
    """True when the pricing table knows `model` at `provider`."""
    return _key(provider, model) in active_prices().prices


def price_for(provider: Provider | str, model: str, table: PriceTable | None = None) -> ModelPrice:
    """The price of `model` at `provider` in `table` (default: the active one); UnknownModelPrice when
    there is none."""
    table = table or active_prices()
    key = _key(provider, model)
    if key is None or key not in table.prices:
        raise UnknownModelPrice(str(provider), model, table.version)
    return table.prices[key]


def cost_usd(provider: Provider | str, model: str, usage: Usage, *, batch: bool,
             table: PriceTable | None = None) -> Decimal:
    """USD for one request's `usage` (see the module docstring for the token convention), to 1e-8, at the
    prices of `table` (default: the active one)."""
    price = price_for(provider, model, table)
    if min(usage.input_tokens, usage.cached_input_tokens, usage.output_tokens, usage.cache_write_5m_tokens,
           usage.cache_write_1h_tokens) < 0:
        raise ValueError(f"token counts cannot be negative: {usage}")
    # Never bill more tokens than were sent: reads, then 1h writes, then 5m writes take from input_tokens.
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    write_1h = min(usage.cache_write_1h_tokens, usage.input_tokens - cached)
    write_5m = min(usage.cache_write_5m_tokens, usage.input_tokens - cached - write_1h)
    uncached = usage.input_tokens - cached - write_1h - write_5m
    total = (
        Decimal(uncached) * price.input
        + Decimal(cached) * price.cached_input
        + Decimal(write_5m) * price.input * CACHE_WRITE_5M
        + Decimal(write_1h) * price.input * CACHE_WRITE_1H
        + Decimal(usage.output_tokens) * price.output
    ) / _MILLION
    if batch:
        total *= Decimal(1) - price.batch_discount
    return total.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def uncached_cost_usd(provider: Provider | str, model: str, usage: Usage, *, batch: bool,
                      table: PriceTable | None = None) -> Decimal:
    """What `usage` would have cost with no prompt cache: every input token at the plain input price."""
    plain = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                  reasoning_tokens=usage.reasoning_tokens)
    return cost_usd(provider, model, plain, batch=batch, table=table)


def pricing_table() -> list[dict[str, str]]:
    """Every priced model of the active table: USD per million tokens and the batch discount."""
    table = active_prices()
    return [{"pricing_version": table.version, "provider": str(provider), "model": model,
             "input": str(p.input), "cached_input": str(p.cached_input), "output": str(p.output),
             "batch_discount": str(p.batch_discount)}
            for (provider, model), p in sorted(table.prices.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))]
