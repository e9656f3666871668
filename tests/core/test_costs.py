"""Costs: list prices per model, the 50% batch discount, cached input at the cached price, to 1e-8 USD."""

from __future__ import annotations

from decimal import Decimal

import pytest

from forge_dagster.core.models import Provider, Usage
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR, load_processors
from forge_dagster.core.platform.pricing import (
    PRICES,
    PRICING_VERSION,
    UnknownModelPrice,
    cost_usd,
    has_price,
    price_for,
)


def test_realtime_cost_bills_cached_input_at_the_cached_price():
    # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per million tokens.
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=200_000, output_tokens=500_000)
    # 800k * 0.15 + 200k * 0.075 + 500k * 0.60 = 0.12 + 0.015 + 0.30
    assert cost_usd(Provider.OPENAI, "gpt-4o-mini", usage, batch=False) == Decimal("0.43500000")


def test_batch_cost_is_half_the_realtime_cost_for_every_token_class():
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=200_000, output_tokens=500_000)
    assert cost_usd(Provider.OPENAI, "gpt-4o-mini", usage, batch=True) == Decimal("0.21750000")
    # claude-3-5-haiku-latest: $0.80 input, $4.00 output: (12345 * 0.8 + 678 * 4) / 1e6 = 0.012588, halved.
    haiku = Usage(input_tokens=12_345, output_tokens=678)
    assert cost_usd(Provider.ANTHROPIC, "claude-3-5-haiku-latest", haiku, batch=True) == Decimal("0.00629400")
    assert cost_usd("anthropic", "claude-3-5-haiku-latest", haiku, batch=False) == Decimal("0.01258800")


def test_anthropic_cache_reads_are_billed_at_a_tenth_of_input():
    # claude-sonnet-4-5: $3 input, $0.30 cache read, $15 output.
    usage = Usage(input_tokens=10_000, cached_input_tokens=8_000, output_tokens=1_000)
    # 2000 * 3 + 8000 * 0.3 + 1000 * 15 = 6000 + 2400 + 15000 = 23400 micro-dollars
    assert cost_usd(Provider.ANTHROPIC, "claude-sonnet-4-5", usage, batch=False) == Decimal("0.02340000")


def test_cost_is_rounded_to_one_hundred_millionth_of_a_dollar():
    one_token = cost_usd(Provider.OPENAI, "gpt-4o-mini", Usage(input_tokens=1), batch=False)
    assert one_token == Decimal("0.00000015") and one_token.as_tuple().exponent == -8
    # 0.075e-6 halves to 7.5e-8: banker's rounding keeps the figure unbiased over many requests.
    assert cost_usd(Provider.OPENAI, "gpt-4o-mini", Usage(input_tokens=1), batch=True) == Decimal(
        "0.00000008"
    )
    assert cost_usd(Provider.OPENAI, "gpt-4o-mini", Usage(), batch=True) == Decimal("0E-8")


def test_reasoning_tokens_are_not_billed_twice():
    with_reasoning = Usage(input_tokens=100, output_tokens=1_000, reasoning_tokens=800)
    plain = Usage(input_tokens=100, output_tokens=1_000)
    assert cost_usd(Provider.OPENAI, "gpt-4.1", with_reasoning, batch=False) == cost_usd(
        Provider.OPENAI, "gpt-4.1", plain, batch=False
    )


def test_cached_tokens_never_exceed_the_input_they_are_part_of():
    usage = Usage(input_tokens=100, cached_input_tokens=500)
    # 100 cached tokens at gpt-4o's $1.25: never more tokens billed than were sent.
    assert cost_usd(Provider.OPENAI, "gpt-4o", usage, batch=False) == Decimal("0.00012500")


def test_negative_token_counts_are_refused():
    with pytest.raises(ValueError, match="negative"):
        cost_usd(Provider.OPENAI, "gpt-4o", Usage(output_tokens=-1), batch=False)


def test_unknown_models_and_providers_are_never_guessed():
    assert not has_price(Provider.OPENAI, "gpt-9")
    assert not has_price("mistral", "gpt-4o")
    assert not has_price(Provider.ANTHROPIC, "gpt-4o-mini")  # a model is priced at its own provider only
    with pytest.raises(
        UnknownModelPrice, match=f"no price for openai/gpt-9 in pricing table {PRICING_VERSION}"
    ):
        cost_usd(Provider.OPENAI, "gpt-9", Usage(input_tokens=1), batch=True)
    with pytest.raises(UnknownModelPrice):
        price_for("mistral", "large")


@pytest.mark.parametrize(
    ("provider", "snapshot", "alias"),
    [
        (Provider.OPENAI, "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        (Provider.OPENAI, "gpt-4.1-2025-04-14", "gpt-4.1"),
        (Provider.ANTHROPIC, "claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"),
        (Provider.ANTHROPIC, "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ],
)
def test_dated_snapshots_cost_the_same_as_their_alias(provider, snapshot, alias):
    assert price_for(provider, snapshot) == price_for(provider, alias)


def test_required_models_and_every_example_processor_have_prices():
    for provider, model in [
        (Provider.OPENAI, "gpt-4o-mini"),
        (Provider.OPENAI, "gpt-4o"),
        (Provider.OPENAI, "gpt-4.1"),
        (Provider.OPENAI, "gpt-4.1-mini"),
        (Provider.ANTHROPIC, "claude-3-5-haiku-latest"),
        (Provider.ANTHROPIC, "claude-sonnet-4-5"),
    ]:
        assert has_price(provider, model)
    for processor in load_processors(PACKAGE_PROCESSORS_DIR).all():
        assert has_price(processor.provider, processor.model)


def test_every_price_is_positive_with_a_cheaper_cache_and_half_off_in_batch():
    for (_, model), price in PRICES.items():
        if "moderation" in model:  # moderations are free
            assert price.input == price.cached_input == price.output == 0
        elif model.startswith("text-embedding"):  # embeddings bill input tokens only, cached or not
            assert 0 < price.cached_input == price.input and price.output == 0
        else:
            assert 0 < price.cached_input < price.input < price.output
        assert price.batch_discount == Decimal("0.5")
