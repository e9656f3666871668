"""Slack receiver, control endpoints, request log hygiene, CLI banner and concurrency."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from forge_dagster.simulator import SimConfig, add_cli_arguments, config_from_args


def test_slack_webhook_records_json_and_answers_ok(sim, http):
    payload = {"text": "batch fb-1 ended", "blocks": [{"type": "section"}]}
    response = http.post(sim.slack_webhook_url, json=payload)
    assert response.status_code == 200 and response.text == "ok"
    assert sim.slack_messages() == [payload]
    assert http.get(sim.url + "/_sim/slack").json() == [payload]
    assert http.post(sim.slack_webhook_url, content=b"not json").status_code == 400
    assert len(sim.slack_messages()) == 1


def test_http_control_endpoints_configure_reset_and_refill(sim, oai, http):
    merged = http.post(sim.url + "/_sim/config", json={"latency_ms": 5, "quota_tokens": 10}).json()
    assert merged["latency_ms"] == 5 and merged["quota_tokens"] == 10 and merged["refusal_rate"] == 0.0
    assert http.get(sim.url + "/_sim/config").json() == merged
    assert http.post(sim.url + "/_sim/config", json={"no_such_knob": 1}).status_code == 400
    assert http.post(sim.url + "/_sim/config", json={"malformed_rate": 3}).status_code == 400
    oai.models.list()
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert http.post(sim.url + "/_sim/quota/refill").status_code == 200
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert [r["path"] for r in http.get(sim.url + "/_sim/requests").json()][:1] == ["/v1/models"]
    http.post(sim.url + "/_sim/reset")
    assert http.get(sim.url + "/_sim/requests").json() == []
    assert http.get(sim.url + "/_sim/config").json()["latency_ms"] == 5  # reset keeps the config


def test_request_log_keeps_a_key_id_never_the_api_key(sim, oai, claude, make_requests, http):
    openai_key, anthropic_key = oai.api_key, claude.api_key
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    claude.messages.batches.create(requests=make_requests(2))
    log = sim.requests()
    text = json.dumps(log) + http.get(sim.url + "/_sim/requests").text
    assert openai_key not in text and anthropic_key not in text
    assert log[0]["key_id"] == hashlib.sha256(openai_key.encode()).hexdigest()[:12]
    assert log[1]["key_id"] == hashlib.sha256(anthropic_key.encode()).hexdigest()[:12]
    assert log[1]["custom_ids"] == ["req-0", "req-1"] and log[1]["provider"] == "anthropic"
    assert {"ts", "method", "path", "status", "provider", "key_id"} <= set(log[0])


def test_64_concurrent_connections_are_all_served(sim):
    sim.configure(latency_ms=100)  # keeps the connections open at the same time
    with httpx.Client(limits=httpx.Limits(max_connections=64), timeout=30) as client:
        def call(i: int) -> int:
            return client.post(sim.openai_base_url + "/chat/completions", headers={"Authorization": "Bearer sk-c"},
                               json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}
                               ).status_code

        with ThreadPoolExecutor(max_workers=64) as pool:
            statuses = list(pool.map(call, range(64)))
    assert statuses == [200] * 64


def test_cli_flags_mirror_the_knobs():
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser, include_server=True)
    ns = parser.parse_args(["--port", "0", "--latency-ms", "20", "--expire-batches", "--rpm-limit", "5",
                            "--route-latency-ms", '{"POST /v1/batches": 3000}', "--malformed-rate", "0.5"])
    config = config_from_args(ns)
    assert config == SimConfig(latency_ms=20, expire_batches=True, rpm_limit=5,
                               route_latency_ms={"POST /v1/batches": 3000}, malformed_rate=0.5)
    assert ns.port == 0 and ns.host == "127.0.0.1"


def test_module_entry_point_prints_the_test_double_banner_and_serves():
    proc = subprocess.Popen([sys.executable, "-m", "forge_dagster.simulator", "--port", "0", "--seed", "3"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        banner = proc.stdout.readline().strip()
        assert banner.startswith("Forge provider SIMULATOR (test double, not a provider) listening on "
                                 "http://127.0.0.1:")
        url = banner.rsplit(" ", 1)[-1]
        assert httpx.get(url + "/_sim/config", timeout=10).json()["latency_ms"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        proc.stdout.close()
