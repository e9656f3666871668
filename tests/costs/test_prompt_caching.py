"""Prompt caching end to end on the simulator: the marks a cached processor's requests carry, the usage
the simulator answers (checked strictly against the SDKs' types), and the ledger pricing writes and reads
apart in batch and realtime, with the hit rate and the saving `forge costs` reports."""

from __future__ import annotations

import json

import anthropic
from anthropic.types import Message
from anthropic.types.messages import MessageBatchIndividualResponse

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import Provider, Usage
from forge_dagster.core.platform.cost_reports import cache_report
from forge_dagster.core.platform.pricing import cost_usd
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.store import JobSpec
from tests.costs.conftest import LONG_SYSTEM
from tests.helpers import run_batch_round, wait_until

MODEL = "claude-3-5-haiku-latest"


def _params(i: int, ttl: str = "1h") -> dict:
    return {"model": "claude-haiku-4-5", "max_tokens": 64,
            "system": [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": ttl}}],
            "messages": [{"role": "user", "content": f"review {i}"}]}


def test_the_simulator_writes_a_marked_prefix_once_then_reads_it_in_the_sdks_own_types(sim):
    client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="sk-ant-test-cache", max_retries=0)
    first = Message.model_validate(client.messages.with_raw_response.create(**_params(0)).http_response.json(),
                                   strict=True)
    assert first.usage.cache_creation_input_tokens > 1024 and first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == first.usage.cache_creation_input_tokens
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0
    second = Message.model_validate(client.messages.with_raw_response.create(**_params(1)).http_response.json(),
                                    strict=True)
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0

    # In a batch, under another key (another cache): the first request writes, the others read.
    other = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="sk-ant-test-other", max_retries=0)
    batch = other.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": _params(i, "5m")}
                                                    for i in range(3)])
    wait_until(lambda: other.messages.batches.retrieve(batch.id).processing_status == "ended", what="batch end")
    with other.messages.batches.with_streaming_response.results(batch.id) as response:
        raw = "\n".join(response.iter_lines())
    lines = [MessageBatchIndividualResponse.model_validate(json.loads(line), strict=True)
             for line in raw.splitlines() if line.strip()]
    usages = {line.custom_id: line.result.message.usage for line in lines}
    assert usages["r0"].cache_creation.ephemeral_5m_input_tokens > 0 and usages["r0"].cache_read_input_tokens == 0
    assert all(usages[r].cache_read_input_tokens > 0 and usages[r].cache_creation_input_tokens == 0
               for r in ("r1", "r2"))


def test_a_cached_processor_marks_a_byte_identical_prefix_for_each_provider(catalog):
    bodies = [render_request(catalog["cached_reviews"], {"review": f"r{i}"}, f"c{i}").body for i in range(2)]
    prefix = [json.dumps({k: b[k] for k in ("system", "tools")}, sort_keys=True) for b in bodies]
    assert prefix[0] == prefix[1]
    assert bodies[0]["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert bodies[0]["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    openai_body = render_request(catalog["cached_tickets"], {"subject": "s", "body": "b"}, "c0").body
    assert openai_body["prompt_cache_key"] == "forge:cached_tickets:1.0.0"
    assert openai_body["messages"][0] == {"role": "system", "content": catalog["cached_tickets"].system_prompt}
    plain = render_request(catalog["review_sentiment"], {"review": "r"}, "c0").body
    assert isinstance(plain["system"], str) and "cache_control" not in plain["tools"][0]


def _ledger(conn, processor: str) -> list[tuple]:
    return conn.execute(
        "SELECT c.job_id, c.attempt, c.input_tokens, c.cached_input_tokens, c.cache_write_5m_tokens, "
        "c.cache_write_1h_tokens, c.output_tokens, c.cost_usd, c.batch_priced FROM costs c "
        "WHERE c.processor = %s ORDER BY c.job_id", (processor,)).fetchall()


def _usage(row: tuple) -> Usage:
    return Usage(input_tokens=row[2], cached_input_tokens=row[3], cache_write_5m_tokens=row[4],
                 cache_write_1h_tokens=row[5], output_tokens=row[6])


def test_a_cached_anthropic_batch_books_one_write_and_reads_at_their_own_prices(store, catalog, ports, sim, conn):
    submit_jobs(store, [JobSpec("cached_reviews", {"review": f"Review {i}: fine."}, processor_version="1.0.0")
                        for i in range(4)])
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 4}
    rows = _ledger(conn, "cached_reviews")
    writes = [r for r in rows if r[5] > 0]
    reads = [r for r in rows if r[3] > 0]
    assert len(writes) == 1 and len(reads) == 3 and all(r[4] == 0 for r in rows)
    assert all(r[8] for r in rows)  # batch priced
    lines = {j: Usage(**u) for j, u in conn.execute("SELECT job_id, usage FROM batch_results")}
    for row in rows:
        assert _usage(row) == Usage(**{**lines[row[0]].__dict__, "reasoning_tokens": 0})
        assert row[7] == cost_usd(Provider.ANTHROPIC, MODEL, _usage(row), batch=True)
    [report] = [r for r in cache_report(store) if r["processor"] == "cached_reviews"]
    assert report["cache_hit_rate"] == 0.75 and report["cache_hits"] == 3
    assert report["cache_write_tokens"] == writes[0][5] and report["saved_usd"] > 0


def test_a_cached_realtime_processor_books_writes_and_reads_at_realtime_prices(store, catalog, sim, conn):
    ids = submit_jobs(store, [JobSpec("cached_reviews_rt", {"review": f"Review {i}"}, processor_version="1.0.0",
                                      mode="realtime") for i in range(3)]).accepted
    ring = KeyRing(keys_from_env({}, simulator_url=sim.url, timeout_s=10))
    RealtimeExecutor(store, catalog, ring, RealtimeConfig(concurrency=1)).run_sync(until_drained=True)
    assert store.jobs.counts() == {"succeeded": 3}
    rows = _ledger(conn, "cached_reviews_rt")
    assert [r[0] for r in rows] == ids
    assert rows[0][4] > 0 and rows[0][3] == 0  # the first call writes (5 minutes)...
    assert all(r[3] == rows[0][4] and r[4] == 0 for r in rows[1:])  # ...the others read what it wrote
    for row in rows:
        assert not row[8] and row[7] == cost_usd(Provider.ANTHROPIC, MODEL, _usage(row), batch=False)
