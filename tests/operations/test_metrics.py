"""`forge metrics`: Prometheus metrics that reflect what a demo run did, read by a real scrape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, forge_env, forge_process, wait_until


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def test_metrics_reflect_a_demo_run(tmp_path, database_url, schema, store):
    env = forge_env(database_url, schema, FORGE_HOME=str(tmp_path / "home"))
    server = forge_process(["metrics", "--port", "0"], env, stderr=subprocess.PIPE, text=True)  # starts meanwhile
    try:
        demo = subprocess.run([sys.executable, "-m", "forge_dagster.cli", "demo", "--jobs", "24", "--json"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert demo.returncode == 0, demo.stderr[-2000:]
        summary = json.loads(demo.stdout.strip().splitlines()[-1])

        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(server.stderr.readline, "")), daemon=True).start()
        found = wait_until(lambda: next((m for line in lines if (m := re.search(r"http://127\.0\.0\.1:\d+/metrics",
                                                                                 line))), None),
                           timeout_s=60, what="the metrics server")
        samples = _samples(httpx.get(found.group(0), timeout=10).text)
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert _total(samples, "forge_store_up") == 1
    assert _total(samples, "forge_jobs") == 24
    assert _total(samples, "forge_jobs", state="succeeded") == summary["jobs"]["succeeded"]
    assert _total(samples, "forge_job_claims_total") >= 24
    assert _total(samples, "forge_provider_results_total", outcome="ok") >= summary["jobs"]["succeeded"]
    for provider in ("openai", "anthropic"):
        assert _total(samples, "forge_tokens_total", provider=provider, kind="input") > 0
        assert _total(samples, "forge_tokens_total", provider=provider, kind="output") > 0
    assert abs(_total(samples, "forge_cost_usd_total") - summary["cost_usd"]) < 1e-5
    assert _total(samples, "forge_batches", state="collected") == sum(summary["batches"].values())
    assert _total(samples, "forge_outbox_undelivered") == store.outbox.lag()[0] > 0  # each batch.ended, unsent
    assert _total(samples, "forge_outbox_lag_seconds") > 0


def test_realtime_provider_calls_are_counted_by_class_of_outcome(sim, store, catalog):
    from collections import Counter

    from forge_dagster.core.ops.metrics import render
    from forge_dagster.core.providers.keyring import SIMULATOR_KEY
    from forge_dagster.core.providers.quota import PausePolicy
    from forge_dagster.core.realtime import RealtimeConfig, RealtimeExecutor
    from forge_dagster.core.realtime.calls import CallPolicy
    from forge_dagster.simulator.dice import key_id
    from tests.realtime.conftest import chat_calls, enqueue, ring_for

    rpm = 600  # the key was used at its limit for the last minute, and Forge is told a limit ten times higher
    sim.configure(latency_ms=50, rpm_limit=rpm)
    ring = ring_for(sim, OPENAI_RPM=str(rpm * 10))
    ring.port(ring.for_provider("openai")[0])  # the SDK loads now, not while the window drains
    now = sim.state.now()
    for i in range(rpm):
        assert sim.state.limiter.check("openai", key_id(SIMULATOR_KEY), 0, rpm, None, now - 60 + i * 60 / rpm).allowed
    enqueue(store, 20)
    RealtimeExecutor(store, catalog, ring, RealtimeConfig(concurrency=16)).run_sync(until_idle=True)
    sim.configure(quota_tokens=0)  # then the credit runs out: the key pauses, its jobs wait
    enqueue(store, 3)
    no_probes = RealtimeConfig(concurrency=4, probe_keys=False, call=CallPolicy(pause=PausePolicy(base_s=600)))
    RealtimeExecutor(store, catalog, ring_for(sim), no_probes).run_sync(until_drained=True)

    seen = Counter(c.get("fault") or ("ok" if c["status"] == 200 else c["status"]) for c in chat_calls(sim))
    assert seen["rate_limited"] >= 1 and seen["quota_exhausted"] >= 1 and seen["ok"] == 20
    samples = _samples(render(store).decode())
    assert {outcome: _total(samples, "forge_provider_calls_total", provider="openai", outcome=outcome)
            for outcome in seen} == dict(seen)
    assert _total(samples, "forge_provider_calls_total") == len(chat_calls(sim))
