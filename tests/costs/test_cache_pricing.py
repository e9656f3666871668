"""The ledger's arithmetic per usage shape, against prices computed by hand: plain input, OpenAI cached
tokens, Anthropic 5-minute and 1-hour cache writes and cache reads, each with the batch discount stacked;
and the providers' usage fields read into those classes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from forge_dagster.core.models import Provider, Usage
from forge_dagster.core.platform.pricing import cost_usd, uncached_cost_usd
from forge_dagster.core.providers.results import anthropic_message_item, openai_completion_item

SONNET = (Provider.ANTHROPIC, "claude-sonnet-4-5")  # $3 input, $0.30 cache read, $15 output per million
MINI = (Provider.OPENAI, "gpt-4o-mini")  # $0.15 input, $0.075 cached, $0.60 output per million


@pytest.mark.parametrize(("usage", "realtime"), [
    # 1000 plain input x $3 + 100 output x $15 = 3000 + 1500 micro-dollars
    (Usage(input_tokens=1000, output_tokens=100), "0.0045"),
    # + 2000 written for 5 minutes at 1.25 x $3 = 7500
    (Usage(input_tokens=3000, output_tokens=100, cache_write_5m_tokens=2000), "0.012"),
    # + 2000 written for 1 hour at 2 x $3 = 12000
    (Usage(input_tokens=3000, output_tokens=100, cache_write_1h_tokens=2000), "0.0165"),
    # + 2000 read at 0.1 x $3 = 600
    (Usage(input_tokens=3000, output_tokens=100, cached_input_tokens=2000), "0.0051"),
    # 500 plain 1500 + 1000 read 300 + 1000 5m 3750 + 500 1h 3000 + output 1500 = 10050
    (Usage(input_tokens=3000, output_tokens=100, cached_input_tokens=1000, cache_write_5m_tokens=1000,
           cache_write_1h_tokens=500), "0.01005"),
])
def test_anthropic_cache_writes_and_reads_are_priced_apart_with_the_batch_discount_stacked(usage, realtime):
    assert cost_usd(*SONNET, usage, batch=False) == Decimal(realtime)
    assert cost_usd(*SONNET, usage, batch=True) == Decimal(realtime) / 2


def test_openai_cached_tokens_are_priced_at_the_models_cached_price():
    # 1024 plain x 0.15 + 1024 cached x 0.075 + 100 x 0.60 = 153.6 + 76.8 + 60 = 290.4 micro-dollars
    usage = Usage(input_tokens=2048, output_tokens=100, cached_input_tokens=1024)
    assert cost_usd(*MINI, usage, batch=False) == Decimal("0.0002904")
    assert cost_usd(*MINI, usage, batch=True) == Decimal("0.0001452")


def test_what_caching_saved_is_the_same_usage_at_plain_input_prices():
    read = Usage(input_tokens=3000, output_tokens=100, cached_input_tokens=2000)
    assert uncached_cost_usd(*SONNET, read, batch=False) == Decimal("0.0105")  # 3000 x 3 + 1500
    written = Usage(input_tokens=3000, output_tokens=100, cache_write_1h_tokens=2000)
    assert uncached_cost_usd(*SONNET, written, batch=True) - cost_usd(*SONNET, written, batch=True) \
        == Decimal("-0.003")  # a write nobody reads costs more than it saves


def test_cache_classes_never_bill_more_tokens_than_were_sent():
    over = Usage(input_tokens=100, cached_input_tokens=80, cache_write_1h_tokens=80, cache_write_5m_tokens=80)
    # 80 read x 0.30 + 20 written for 1 hour x 6 = 24 + 120 micro-dollars; nothing left for 5m or plain
    assert cost_usd(*SONNET, over, batch=False) == Decimal("0.000144")
    with pytest.raises(ValueError):
        cost_usd(*SONNET, Usage(input_tokens=10, cache_write_5m_tokens=-1), batch=False)


def _message(usage: dict) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "{}"}], "stop_reason": "end_turn", "usage": usage}


def test_anthropic_usage_is_read_with_its_cache_creation_split():
    item = anthropic_message_item("c", _message({
        "input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 1500,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000}}))
    assert item.usage == Usage(input_tokens=1520, output_tokens=7, cache_write_5m_tokens=500,
                               cache_write_1h_tokens=1000)
    read = anthropic_message_item("c", _message({"input_tokens": 20, "output_tokens": 7,
                                                 "cache_read_input_tokens": 1500, "cache_creation_input_tokens": 0}))
    assert read.usage == Usage(input_tokens=1520, output_tokens=7, cached_input_tokens=1500)


def test_anthropic_cache_writes_without_a_split_are_five_minute_writes():
    item = anthropic_message_item("c", _message({"input_tokens": 20, "output_tokens": 7,
                                                 "cache_creation_input_tokens": 1500}))
    assert (item.usage.cache_write_5m_tokens, item.usage.cache_write_1h_tokens) == (1500, 0)


def test_openai_cached_tokens_are_read_from_prompt_tokens_details():
    body = {"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2048, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 1920}}}
    assert openai_completion_item("c", body).usage == Usage(input_tokens=2048, output_tokens=9,
                                                            cached_input_tokens=1920)
