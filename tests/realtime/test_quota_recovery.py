"""Quota exhaustion pauses the key, a probe brings it back once the quota is refilled, no job is lost or
failed by it, and routing moves calls to a fallback key while the first one is paused."""

from __future__ import annotations

from forge_dagster.core.providers.quota import PausePolicy
from forge_dagster.core.realtime import RealtimeConfig
from forge_dagster.core.realtime.calls import CallPolicy
from forge_dagster.simulator.dice import key_id
from tests.helpers import wait_until

from .conftest import TICKET, chat_calls, enqueue, ring_for, start_executor, variant

FAST_PROBES = PausePolicy(base_s=0.2, cap_s=1.0, probe_budget_s=5.0)
CONFIG = RealtimeConfig(concurrency=8, key_refresh_s=0.1, call=CallPolicy(pause=FAST_PROBES))


def _outbox(store) -> list[tuple[str, dict]]:
    with store.transaction() as conn:
        return conn.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()


def test_quota_exhaustion_pauses_the_key_and_the_probe_resumes_it_after_refill(sim, store, catalog, running):
    sim.configure(quota_tokens=4000)  # a handful of jobs' worth
    ids = enqueue(store, 30)
    worker = start_executor(running, store, catalog, ring_for(sim), CONFIG)

    def relapsed() -> bool:  # paused, probed back at least once, and paused again: the quota is still out
        row = store.keys.get("openai", "simulator")
        return row is not None and row["state"] == "paused" and row["probe_count"] >= 2

    wait_until(relapsed, timeout_s=20, what="the key to be paused, probed and paused again")
    counts = store.jobs.counts()
    assert not {"failed", "dead", "invalid"} & set(counts), counts
    assert 0 < counts.get("succeeded", 0) < len(ids)

    sim.refill_quota()
    wait_until(lambda: store.jobs.counts() == {"succeeded": len(ids)}, timeout_s=20, what="every job to succeed")
    stats = worker.finish()

    key = store.keys.get("openai", "simulator")
    assert (key["state"], key["probe_count"], key["paused_at"]) == ("active", 0, None)
    assert all(store.jobs.get(i)["attempt"] == 1 for i in ids), "a paused key must not spend attempts"
    topics = [topic for topic, _ in _outbox(store)]
    assert topics.count("provider.all_keys_paused") == 1, "the operator is told once per outage"
    assert topics.count("provider.keys_available") == 1
    assert topics.count("key.paused") >= 2 and topics.count("key.resumed") >= 2
    # Growing intervals: each relapse waits longer for its next probe.
    probes = [payload["probe_count"] for topic, payload in _outbox(store) if topic == "key.paused"]
    assert probes == sorted(probes) and probes[-1] > probes[0]
    assert stats.keys_paused == topics.count("key.paused")
    assert stats.failed == stats.dead == 0


def test_a_paused_key_is_skipped_and_calls_move_to_the_fallback_key(sim, store, catalog, running):
    primary, backup = "sk-proj-forgetest-PRIMARY-0123456789ab", "sk-proj-forgetest-BACKUP-0123456789ab"
    _, routed = variant(store, catalog, version="9.0.0", keys=("primary", "backup"))
    sim.configure(quota_tokens=2500)
    ids = enqueue(store, 12, TICKET, version="9.0.0")
    ring = ring_for(sim, OPENAI_API_KEY=primary, OPENAI_API_KEY_BACKUP=backup, OPENAI_BASE_URL="SIM_OPENAI")
    worker = start_executor(running, store, routed, ring, RealtimeConfig(concurrency=4))
    wait_until(lambda: store.jobs.counts() == {"succeeded": len(ids)}, timeout_s=20, what="every job to succeed")
    worker.finish()

    calls = chat_calls(sim)
    first_refusal = next(i for i, c in enumerate(calls) if c["status"] == 429)
    assert {c["key_id"] for c in calls[:first_refusal]} == {key_id(primary)}, "the first choice is used first"
    after = [c for c in calls[first_refusal:] if c["status"] == 200]
    assert after and {c["key_id"] for c in after} == {key_id(backup)}, "the paused key is skipped"
    states = {(k["alias"], k["state"]) for k in store.keys.all()}
    assert states == {("primary", "paused"), ("backup", "active")}
    topics = [topic for topic, _ in _outbox(store)]
    assert topics == ["key.paused"], "one key paused, the provider still served: nothing else to tell"
    assert all(k["masked"] != primary and primary not in str(k) for k in store.keys.all())
