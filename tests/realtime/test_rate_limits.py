"""Rate limits against the simulator's enforced limits: the paced rate reaches the limit and never goes
over it, and a 429 storm ends with every job done after a bounded number of retries."""

from __future__ import annotations

import bisect

import pytest

from forge_dagster.core.providers.keyring import SIMULATOR_KEY
from forge_dagster.core.providers.ratelimit import KeyLimiter
from forge_dagster.core.realtime import RealtimeConfig, RealtimeExecutor
from forge_dagster.simulator.dice import key_id

from .conftest import REVIEW, TICKET, chat_calls, enqueue, ring_for

LATENCY_MS, CONCURRENCY = 100, 64
WINDOW_S = 5.0  # no 5-second stretch holds more calls than the limit allows in it, plus the limiter's
CATCH_UP_S = KeyLimiter().burst_s  # catch-up allowance for calls delayed by a busy event loop


def _rate_and_busiest(stamps: list[float], window_s: float) -> tuple[float, int]:
    """Requests per second after the first second, and the most requests in any `window_s` window.
    The sustained rate leaves the first second out: there the client opens its connections and every
    worker task starts at once, so calls reach the provider late by however long that takes (on a busy
    machine, long enough for later ones to catch them up), which says nothing about the pace. The
    window count includes every call."""
    stamps = sorted(stamps)
    first = bisect.bisect_left(stamps, stamps[0] + 1.0)
    rate = (len(stamps) - 1 - first) / (stamps[-1] - stamps[first])
    busiest = max(bisect.bisect_left(stamps, t + window_s) - i for i, t in enumerate(stamps))
    return rate, busiest


@pytest.mark.parametrize(
    ("processor", "path", "rpm", "jobs", "env"),
    [
        # No limit configured: the first call's x-ratelimit-* headers set the pace.
        (TICKET, "/v1/chat/completions", 1800, 160, {}),
        # Configured to the provider's limit (ANTHROPIC_RPM), as an operator would.
        (REVIEW, "/v1/messages", 1200, 110, {"ANTHROPIC_RPM": "1200"}),
    ],
    ids=["openai-learned-from-headers", "anthropic-configured"],
)
def test_paced_rate_is_within_ten_percent_of_the_enforced_limit_and_never_above(
    remote_sim, store, catalog, processor, path, rpm, jobs, env,
):
    sim = remote_sim
    sim.configure(latency_ms=LATENCY_MS, rpm_limit=rpm)
    ids = enqueue(store, jobs, processor)
    executor = RealtimeExecutor(store, catalog, ring_for(sim, **env), RealtimeConfig(concurrency=CONCURRENCY))
    stats = executor.run_sync(until_idle=True)

    calls = chat_calls(sim, path)
    limit = min(CONCURRENCY / (LATENCY_MS / 1000), rpm / 60)  # requests per second
    rate, busiest = _rate_and_busiest([c["ts"] for c in calls], WINDOW_S)
    assert store.jobs.counts() == {"succeeded": len(ids)}
    assert [c["status"] for c in calls].count(429) == 0, "the simulator refused calls: the limit was exceeded"
    assert len(calls) == stats.calls == len(ids)
    assert 0.9 * limit <= rate <= limit, f"achieved {rate:.1f}/s against a limit of {limit:.1f}/s"
    assert busiest <= limit * (WINDOW_S + CATCH_UP_S), f"{busiest} calls within {WINDOW_S} s at {limit:.1f}/s"


def test_429_storm_ends_with_every_job_done_and_few_retries(sim, store, catalog):
    """Another application has used this key at its limit for the last minute, and Forge was
    configured ten times too high: the provider answers 429 until Forge paces to the real limit."""
    rpm = 1200
    sim.configure(latency_ms=LATENCY_MS, rpm_limit=rpm)
    ids = enqueue(store, 60, TICKET)
    ring = ring_for(sim, OPENAI_RPM=str(rpm * 10))
    ring.port(ring.for_provider("openai")[0])  # the SDK loads now, not while the window drains
    now = sim.state.now()
    for i in range(rpm):  # the other application's calls, spread over the last 60 s
        assert sim.state.limiter.check("openai", key_id(SIMULATOR_KEY), 0, rpm, None, now - 60 + i * 60 / rpm).allowed

    executor = RealtimeExecutor(store, catalog, ring, RealtimeConfig(concurrency=CONCURRENCY))
    stats = executor.run_sync(until_idle=True)

    statuses = [c["status"] for c in chat_calls(sim)]
    refused = statuses.count(429)
    assert store.jobs.counts() == {"succeeded": len(ids)}
    assert all(store.jobs.get(i)["attempt"] == 1 for i in ids), "a 429 must not spend a job's attempt"
    assert refused >= 1, "no storm happened: the scenario did not exercise 429s"
    assert stats.rate_limited == refused
    # Bounded: at most the calls already in flight when the first 429 came back (one wave, at most
    # `concurrency`), not one per waiting call per retry-after; no job needed a second attempt.
    assert refused <= CONCURRENCY, f"{refused} calls refused: retries were burnt"
    assert statuses.count(200) == len(ids)
    assert stats.call_retries == refused
