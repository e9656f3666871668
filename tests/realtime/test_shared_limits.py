"""A key's limits hold across workers: two workers, each with its own key ring and store connection (as
two `forge work` processes), pace on the key's one schedule in the store; and tokens per
minute are paced by what the provider counts, the estimate before a call settled by the usage after it."""

from __future__ import annotations

import bisect
import threading

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.providers.keyring import SIMULATOR_KEY
from forge_dagster.core.providers.ratelimit import KeyLimiter
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.realtime import RealtimeConfig, RealtimeExecutor
from forge_dagster.core.realtime.routing import estimate_tokens
from forge_dagster.core.store import ForgeStore, JobSpec
from forge_dagster.simulator import openai_format
from forge_dagster.simulator.dice import key_id
from forge_dagster.simulator.generation import estimate_tokens as simulator_tokens

from .conftest import TICKET, chat_calls, enqueue, ring_for

CATCH_UP_S = KeyLimiter().burst_s


def test_two_workers_with_their_own_key_rings_stay_within_the_keys_limit_together(
    sim, store, catalog, database_url, schema,
):
    """The provider has seen this key at its limit for the last minute, so it refuses any call beyond
    the limit at once: two workers that each paced alone would together go twice as fast."""
    rpm = 1200
    sim.configure(latency_ms=100, rpm_limit=rpm)
    ids = enqueue(store, 80)
    rings = [ring_for(sim), ring_for(sim)]
    for ring in rings:
        ring.port(ring.for_provider("openai")[0])  # the SDK loads now, not while the window drains
    now = sim.state.now()
    for i in range(rpm):  # the last minute's calls: capacity frees at exactly the limit's rate
        assert sim.state.limiter.check("openai", key_id(SIMULATOR_KEY), 0, rpm, None, now - 60 + i * 60 / rpm).allowed

    stats, errors = [], []

    def work(ring) -> None:
        try:
            with ForgeStore(database_url, schema, pool_size=4) as own_store:  # a process's own connections
                executor = RealtimeExecutor(own_store, catalog, ring, RealtimeConfig(concurrency=16))
                stats.append(executor.run_sync(until_idle=True))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ring,)) for ring in rings]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert store.jobs.counts() == {"succeeded": len(ids)}
    assert all(s.calls >= 10 for s in stats), [s.calls for s in stats]  # both worked, side by side
    refused = [c["status"] for c in chat_calls(sim)].count(429)
    assert refused <= 2, f"{refused} calls refused: the workers together went over the key's limit"


def test_tokens_per_minute_are_paced_by_what_the_provider_counts(remote_sim, store):
    """A pasted tab-separated log: its escapes make the request's estimate about 1.6 times what the
    provider counts. Paced by the estimate alone, the key would run at about 60% of its limit; settled by
    the usage of each answer, it runs at the limit. (Concurrency is a little above what the limit needs:
    slots reserved before the first answers came back keep their estimated spacing.)"""
    sim = remote_sim
    tpm, latency_ms, jobs = 1_500_000, 100, 100
    sim.configure(latency_ms=latency_ms, tpm_limit=tpm)
    processor = load_processors()[TICKET]
    payloads = [{"subject": f"Log {i:03d}", "body": "\t" * 3000} for i in range(jobs)]
    submit_jobs(store, [JobSpec(TICKET, p, processor_version=processor.version, mode="realtime") for p in payloads])
    body = render_request(processor, payloads[0], "x").body
    counted = simulator_tokens(openai_format.input_text(body)) + openai_format.max_tokens(body)
    assert estimate_tokens(body) > 1.5 * counted

    stats = RealtimeExecutor(store, load_catalog(store), ring_for(sim), RealtimeConfig(concurrency=6)).run_sync(
        until_idle=True)

    stamps = sorted(c["ts"] for c in chat_calls(sim))
    limit = tpm / 60 / counted  # calls per second the provider allows
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    busiest = max(bisect.bisect_left(stamps, t + 5.0) - i for i, t in enumerate(stamps))
    assert store.jobs.counts() == {"succeeded": jobs} and stats.calls == jobs
    assert stats.rate_limited == 0, "the provider refused calls: its token limit was exceeded"
    assert 0.9 * limit <= rate <= limit, f"achieved {rate:.1f} calls/s against a limit of {limit:.1f}/s"
    assert busiest <= limit * (5.0 + CATCH_UP_S), f"{busiest} calls within 5 s at {limit:.1f}/s"
