"""Notifications: Block Kit messages to a Slack webhook, every topic rendered, storms grouped."""

from __future__ import annotations

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.ops.notify import render_message
from forge_dagster.core.ops.relay import build_relay
from forge_dagster.core.store import JobSpec, OutboxMessage
from forge_dagster.core.store.types import OutboxRow
from tests.helpers import run_batch_round, wait_until
from tests.operations.conftest import ticket_specs


def _texts(message: dict) -> list[str]:
    texts = []
    for block in message["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [e["text"] for e in block.get("elements", [])]
    return texts


def _valid_block_kit(message: dict) -> bool:
    return (bool(message["text"]) and 0 < len(message["blocks"]) <= 50
            and all(block["type"] in {"header", "section", "divider", "context"} for block in message["blocks"])
            and all(len(t) <= 3000 for t in _texts(message)))


def test_batch_end_reaches_the_simulators_webhook_by_default_with_counts_cost_and_duration(
    store, catalog, ports, sim, tmp_path,
):
    submit_jobs(store, ticket_specs(6))
    [batch_id] = run_batch_round(store, catalog, ports)
    relay = build_relay(store, forge_home=tmp_path, environ={"FORGE_SIMULATOR_URL": sim.url})  # no Slack URL set
    try:
        assert "simulator" in relay.describe()
        wait_until(lambda: relay.drain() is not None and sim.slack_messages(), timeout_s=10, what="a message")
    finally:
        relay.close()
    [message] = sim.slack_messages()
    assert _valid_block_kit(message)
    text = "\n".join(_texts(message))
    assert f"Batch b{batch_id} ended" in text
    assert "6 succeeded" in text and "$0.0" in text and "ticket_triage" in text
    assert store.outbox.lag()[0] == 0


def test_invalid_and_dead_jobs_are_told_with_a_sample_of_reasons(store, catalog, ports, sim, receiver, make_relay):
    sim.configure(schema_violation_rate=1.0)
    submit_jobs(store, [JobSpec(s.processor, s.payload, external_id=s.external_id, processor_version="1.0.0",
                           max_attempts=1) for s in ticket_specs(3)])
    [batch_id] = run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"invalid": 3}
    relay = make_relay(store, webhook=receiver.url + "/slack")
    wait_until(lambda: relay.drain() is not None and receiver.slack_messages(), timeout_s=10, what="a message")

    [message] = receiver.slack_messages()
    text = "\n".join(_texts(message.json))
    assert "Jobs turned invalid or dead: 3" in text
    assert f"3 invalid, 0 dead* from batch b{batch_id}" in text  # the counts and where they came from
    assert "(invalid):" in text  # each sampled job with its reason


def test_a_storm_of_events_becomes_one_grouped_message(store, receiver, make_relay):
    messages = [OutboxMessage("batch.ended", f"batch:{i}", {
        "batch_id": i, "provider": "openai", "model": "gpt-4o-mini", "state": "ended_completed",
        "counts": {"succeeded": 10}, "cost_usd": 0.01, "duration_s": 60 + i}) for i in range(100)]
    for i in range(50):  # one key flapping
        topic = "key.paused" if i % 2 == 0 else "key.resumed"
        messages.append(OutboxMessage(topic, "key:openai:primary", {
            "provider": "openai", "alias": "primary", "reason": "quota exhausted", "next_probe_at": "soon"}))
    for m in messages:
        store.outbox.write([m])
    relay = make_relay(store, webhook=receiver.url + "/slack")
    wait_until(lambda: relay.drain() is not None and store.outbox.lag()[0] == 0, timeout_s=15, what="the storm")

    [message] = receiver.slack_messages()
    body = message.json
    assert _valid_block_kit(body)
    text = "\n".join(_texts(body))
    assert "150 events" in text
    assert "100 batches ended" in text and "1000 succeeded" in text and "$1.0000" in text
    assert "paused 25×" in text and "resumed 25×" in text
    assert text.count("`b") <= 6  # a sample of batches, not a hundred lines


def _rows(*items: tuple[str, dict]) -> list[OutboxRow]:
    return [OutboxRow(i + 1, topic, f"k{i}", payload, 0) for i, (topic, payload) in enumerate(items)]


def test_every_topic_forge_writes_renders_as_block_kit():
    cases = {
        "key.paused": ({"provider": "openai", "alias": "backup", "reason": "insufficient_quota",
                        "probe_count": 1, "next_probe_at": "2026-01-01T00:05:00"}, "openai key `backup` paused"),
        "key.resumed": ({"provider": "anthropic", "alias": "primary", "probes": 3, "paused_for": 620},
                        "anthropic key `primary` resumed"),
        "provider.all_keys_paused": ({"provider": "openai", "reason": "quota", "message":
                                      "every openai key is paused; its jobs wait"}, "every openai key is paused"),
        "provider.keys_available": ({"provider": "openai", "alias": "backup"}, "answers again"),
        "briefing.ready": ({"title": "Morning briefing", "summary": "3 findings, 1 healed step"}, "3 findings"),
        "jobs.invalid_or_dead": ({"batch_id": 4, "invalid": 1, "dead": 1, "samples": [
            {"job": 9, "state": "dead", "reason": "max attempts (3) reached"}]}, "job 9 (dead)"),
        "something.new": ({"x": 1}, "something.new"),
    }
    for topic, (payload, expected) in cases.items():
        message = render_message(_rows((topic, payload)))
        assert _valid_block_kit(message), topic
        assert expected in "\n".join(_texts(message)), topic
    mixed = render_message(_rows(*[(t, p) for t, (p, _) in cases.items()]))
    assert _valid_block_kit(mixed)
    first_section = next(b for b in mixed["blocks"] if b["type"] == "section")["text"]["text"]
    assert "All keys paused" in first_section  # the urgent kind comes first


def test_a_message_never_shows_a_registered_key():
    from forge_dagster.core.secrets import register_secret

    key = "sk-proj-notify-test-9f8e7d6c5b4a3210"
    register_secret(key)
    message = render_message(_rows(("key.paused", {"provider": "openai", "alias": "x", "reason": f"bad key {key}"})))
    assert key not in str(message) and "…3210" in str(message)
