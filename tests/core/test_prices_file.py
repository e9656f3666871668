"""FORGE_PRICES_FILE: a team's own prices over the built-in table, versioned, and refused with the file and
the entry named when wrong."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest

from forge_dagster.core.models import Provider, Usage
from forge_dagster.core.platform.pricing import (
    PRICING_VERSION,
    PricesFileError,
    UnknownModelPrice,
    cost_usd,
    price_for,
    pricing_table,
    pricing_version,
)


@pytest.fixture
def prices_file(tmp_path, monkeypatch):
    path = tmp_path / "prices.yaml"
    monkeypatch.setenv("FORGE_PRICES_FILE", str(path))
    return path


def test_the_file_adds_and_overrides_prices_and_names_its_version(prices_file):
    prices_file.write_text("""
version: acme-1
prices:
  - {provider: openai, model: gpt-4o, input: 2.00, output: 8.00, cached_input: 1.00, batch_discount: 0.4}
  - {provider: anthropic, model: claude-inhouse, input: 1, output: 4}
""")
    assert pricing_version() == f"{PRICING_VERSION}+acme-1"
    negotiated = price_for(Provider.OPENAI, "gpt-4o")
    assert (negotiated.input, negotiated.cached_input, negotiated.batch_discount) == (2, 1, Decimal("0.4"))
    added = price_for(Provider.ANTHROPIC, "claude-inhouse")
    assert added.cached_input == added.input == 1 and added.batch_discount == Decimal("0.5")  # the defaults
    # 1M input tokens at $2, 60% of it in a batch; the built-in models are still priced.
    assert cost_usd(Provider.OPENAI, "gpt-4o", Usage(input_tokens=1_000_000), batch=True) == Decimal("1.2")
    assert price_for(Provider.OPENAI, "gpt-4o-mini").input == Decimal("0.15")
    assert {r["pricing_version"] for r in pricing_table()} == {f"{PRICING_VERSION}+acme-1"}


def test_a_changed_file_is_read_again(prices_file):
    prices_file.write_text("version: v1\nprices: [{provider: openai, model: m, input: 1, output: 1}]\n")
    assert price_for(Provider.OPENAI, "m").input == 1
    prices_file.write_text("version: v2\nprices: [{provider: openai, model: m, input: 3, output: 1}]\n")
    stat = prices_file.stat()
    os.utime(prices_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later write, whatever the clock
    assert price_for(Provider.OPENAI, "m").input == 3 and pricing_version().endswith("+v2")
    prices_file.write_text("version: v3\nprices: []\n")
    os.utime(prices_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    with pytest.raises(UnknownModelPrice, match=f"in pricing table {PRICING_VERSION}\\+v3"):
        price_for(Provider.OPENAI, "m")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("prices: []\n", "expected a mapping with `version`"),
        ("version: x\nprices: [{provider: openai, model: m, input: 1}]\n", "prices[0]: missing output"),
        ("version: x\nprices: [{provider: mistral, model: m, input: 1, output: 1}]\n",
         "prices[0].provider: unknown provider 'mistral'"),
        ("version: x\nprices: [{provider: openai, model: m, input: -1, output: 1}]\n",
         "prices[0].input: -1 must be a number >= 0"),
        ("version: x\nprices: [{provider: openai, model: m, input: 1, output: lots}]\n",
         "prices[0].output: 'lots' is not a number"),
        ("version: x\nprices: [{provider: openai, model: m, input: 1, output: 1, batch_discount: 2}]\n",
         "prices[0].batch_discount: 2 is more than the whole price"),
        ("version: x\nprices: [{provider: openai\n", "cannot be read as YAML"),
    ],
)
def test_a_wrong_file_is_refused_naming_the_file_and_the_entry(prices_file, text, names):
    prices_file.write_text(text)
    with pytest.raises(PricesFileError) as refused:
        price_for(Provider.OPENAI, "gpt-4o")
    assert str(prices_file) in str(refused.value) and names in str(refused.value)


def test_a_missing_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_PRICES_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(PricesFileError, match="nope.yaml: No such file"):
        pricing_version()
