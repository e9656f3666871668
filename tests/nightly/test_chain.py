"""The nightly chain through Dagster, on the test schema, real Redis and the simulator (Ollama, Slack):
end to end, with Ollama down (the briefing still goes out and says so), and with a model that answers
broken JSON; and the generated dagster.yaml (run retries, one slot in the GPU pool)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import dagster as dg
import jsonschema

from forge_dagster.assets.nightly import NIGHT_TAG, health_checks, research_scan, triage
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.nightly.triage import THREAT_SCHEMA
from forge_dagster.core.ops.relay import build_relay
from forge_dagster.core.runtime import DAGSTER_DATABASE, ensure_database, with_database, write_dagster_yaml
from forge_dagster.core.store import JobSpec
from forge_dagster.dagster_instance import apply_pool_limits
from forge_dagster.definitions import build_definitions
from forge_dagster.jobs.nightly_jobs import nightly_schedule, weekly_consolidation
from forge_dagster.resources.ollama import OllamaResource
from tests.helpers import succeed
from tests.nightly.conftest import model_calls, ollama_requests

GREEN_HEALTH = {"health_checks": {"config": {"require_daemon": False}}}


def _rss(path, items):
    entries = "".join(f"<item><guid>{i}</guid><title>{t}</title><link>https://example.org/{i}</link>"
                      f"<description>About {t}</description></item>" for i, t in items)
    path.write_text(f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{entries}</channel></rss>')
    return str(path)


def _some_job_outcomes(store) -> None:
    """Forge's own work of the night: two succeeded, one failed, and the cost booked for one."""
    submit_jobs(store, [JobSpec("ticket_triage", {"n": i}, processor_version="1.0.0", mode="realtime") for i in range(3)])
    jobs = store.jobs.claim(3, mode="realtime")
    answer = {"category": "bug", "priority": "high", "summary": "Export does nothing."}
    succeed(store, [(jobs[0], answer), (jobs[1], answer)])
    store.jobs.fail(jobs[2], "invalid_request: prompt too long", retryable=False)
    with store.transaction() as conn:
        conn.execute("INSERT INTO costs (job_id, attempt, provider, model, processor, input_tokens, output_tokens,"
                     " cost_usd, pricing_version, batch_priced) VALUES (%s, 1, 'openai', 'gpt-4o-mini',"
                     " 'ticket_triage', 1200, 300, 0.0042, 'test', false)", (jobs[0].id,))


def test_triage_gate_calls_no_model_when_every_check_passes(resources, sim, store):
    result = dg.materialize([health_checks, triage], resources=resources, run_config={"ops": GREEN_HEALTH},
                            tags={NIGHT_TAG: "2030-01-01"})
    assert result.success
    output = store.knowledge.night_steps("2030-01-01")["triage"]["output"]
    assert output["level"] == "GREEN", output["anomalies"]
    assert output["model_called"] is False
    # The request log shows the health probes, but no model call and no model load.
    assert model_calls(sim) == [] and ollama_requests(sim, "/api/generate") == []
    assert any(r["path"] == "/api/tags" for r in sim.requests())


def test_anomalies_alone_go_to_the_model_for_a_threat_assessment(resources, sim, store):
    config = {"health_checks": {"config": {"require_daemon": False, "disk_min_free_gb": 1e9}}}
    result = dg.materialize([health_checks, triage], resources=resources, run_config={"ops": config},
                            tags={NIGHT_TAG: "2030-01-01"})
    assert result.success
    output = store.knowledge.night_steps("2030-01-01")["triage"]["output"]
    assert output["level"] == "RED"  # the rules decide: a full disk stops Forge
    assert [a["name"] for a in output["anomalies"]] == ["disk"]
    jsonschema.validate(output["assessment"], THREAT_SCHEMA)
    assert [r["path"] for r in model_calls(sim)] == ["/api/chat"]


def test_nightly_chain_materialises_end_to_end_and_the_briefing_reaches_slack_once(
        resources, sim, store, tmp_path):
    _some_job_outcomes(store)
    feed = _rss(tmp_path / "feed.xml", [("a1", "Speculative decoding in llama.cpp"), ("a2", "LoRA at 4 bits")])
    defs = build_definitions(resources)
    job = defs.resolve_job_def("nightly_chain")
    run_config = {"ops": {**GREEN_HEALTH, "research_scan": {"config": {"feeds": [feed]}}}}
    result = job.execute_in_process(run_config=run_config, tags={NIGHT_TAG: "2030-01-02"},
                                    instance=dg.DagsterInstance.ephemeral())
    assert result.success
    steps = store.knowledge.night_steps("2030-01-02")
    assert set(steps) == {"gpu_warmup", "health_checks", "triage", "research_scan", "job_outcomes",
                          "knowledge_consolidation", "gpu_release"}
    # One job in three failed: the failure rate is an anomaly, so the model assessed it (AMBER by the rules).
    triage_out = steps["triage"]["output"]
    assert (triage_out["level"], [a["name"] for a in triage_out["anomalies"]]) == ("AMBER", ["failure_rates"])
    assert triage_out["model_called"] and triage_out["assessment"]["threat"] in ("low", "medium", "high")
    # Findings: the anomaly, two research items, the night's job totals and one failure reason.
    memories = store.knowledge.memories_of_night("2030-01-02")
    assert sorted(m.source for m in memories) == sorted(["health", "forge:failures", "forge:jobs",
                                                         "research:" + feed, "research:" + feed])
    assert all(m.fence and m.fence >= 1 for m in memories)
    # The threat assessment, then one summary per finding; the warm-up load and the final unload.
    assert len(model_calls(sim)) == 1 + 5
    assert len(ollama_requests(sim, "/api/generate")) == 2
    assert sim.requests()[-1]["path"] == "/api/ps"  # the GPU was handed back and checked

    # Every output made on the GPU was saved under its lease's fence, in the order the chain took the lock.
    with store.transaction() as conn:
        fences = dict(conn.execute("SELECT step, fence FROM nightly_steps WHERE night = '2030-01-02'").fetchall())
    gpu = [fences[s] for s in ("gpu_warmup", "triage", "knowledge_consolidation", "gpu_release")]
    assert None not in gpu and gpu == sorted(gpu) and len(set(gpu)) == 4
    assert {s for s, f in fences.items() if f is None} == {"health_checks", "research_scan", "job_outcomes"}

    briefing = store.knowledge.get_briefing("2030-01-02")
    text = briefing["markdown"]
    for heading in ("## What ran", "## What failed", "## What it cost", "## What was learned"):
        assert heading in text
    assert "invalid_request: prompt too long" in text and "$0.0042" in text and "LoRA at 4 bits" in text

    relay = build_relay(store, forge_home=tmp_path, slack_webhook_url=sim.slack_webhook_url)
    try:
        assert relay.drain().delivered >= 1
        # A re-run of the briefing for the same night updates the text but queues nothing new.
        again = dg.materialize([defs.get_assets_def("morning_briefing")], resources=resources,
                               tags={NIGHT_TAG: "2030-01-02"})
        assert again.asset_materializations_for_node("morning_briefing")[0].metadata[
            "queued_for_slack"].value is False
        relay.drain()
    finally:
        relay.close()
    briefings = [m for m in sim.slack_messages() if "Morning briefing 2030-01-02" in json.dumps(m)]
    assert len(briefings) == 1


def test_second_scan_of_the_same_feed_remembers_only_new_items(resources, sim, store, tmp_path):
    path = tmp_path / "feed.json"
    path.write_text(json.dumps({"version": "https://jsonfeed.org/version/1.1",
                                "items": [{"id": "1", "title": "Quantised KV cache", "url": "https://x/1"}]}))
    run_config = {"ops": {"research_scan": {"config": {"feeds": [str(path)]}}}}
    first = dg.materialize([research_scan], resources=resources, run_config=run_config, tags={NIGHT_TAG: "2030-01-03"})
    assert first.asset_materializations_for_node("research_scan")[0].metadata["new_items"].value == 1
    path.write_text(json.dumps({"items": [{"id": "1", "title": "Quantised KV cache"},
                                          {"id": "2", "title": "Flash attention 3"}]}))
    second = dg.materialize([research_scan], resources=resources, run_config=run_config,
                            tags={NIGHT_TAG: "2030-01-04"})
    meta = second.asset_materializations_for_node("research_scan")[0].metadata
    assert (meta["new_items"].value, meta["seen_before"].value) == (1, 1)


def test_schedule_runs_once_per_night_at_the_configured_time():
    when = datetime(2030, 1, 5, 2, 0, tzinfo=UTC)
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        request = nightly_schedule(context)
    assert request.run_key == "nightly:2030-01-05"
    assert request.tags[NIGHT_TAG] == "2030-01-05"
    assert nightly_schedule.cron_schedule == "0 2 * * *"


def test_weekly_consolidation_runs_on_sundays():
    assert weekly_consolidation.cron_schedule.endswith(" * * 0")  # day of week 0: Sunday
    assert weekly_consolidation.job_name == "weekly_consolidation_job"


def _run_chain(resources, night: str, run_config=None):
    job = build_definitions(resources).resolve_job_def("nightly_chain")
    return job.execute_in_process(run_config=run_config or {"ops": GREEN_HEALTH}, tags={NIGHT_TAG: night},
                                  instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_with_ollama_down_the_briefing_still_reaches_slack_and_names_the_failure(resources, sim, store, tmp_path):
    down = {**resources, "ollama": OllamaResource(host=f"http://127.0.0.1:{_closed_port()}", timeout_s=5)}
    result = _run_chain(down, "2030-01-06")
    # Every step ran; only the final release failed (so the run shows red and healing sees why).
    assert [e.step_key for e in result.all_events if e.is_step_failure] == ["gpu_release"]
    steps = store.knowledge.night_steps("2030-01-06")
    assert "OllamaUnavailable" in steps["gpu_warmup"]["output"]["error"]
    triage_out = steps["triage"]["output"]
    assert triage_out["level"] == "RED"
    assert {a["name"] for a in triage_out["anomalies"]} == {"ollama", "gpu_warmup"}
    text = store.knowledge.get_briefing("2030-01-06")["markdown"]
    assert "Step `gpu_warmup` failed: OllamaUnavailable" in text and "Night status: RED" in text

    relay = build_relay(store, forge_home=tmp_path, slack_webhook_url=sim.slack_webhook_url)
    try:
        relay.drain()
    finally:
        relay.close()
    [message] = [m for m in sim.slack_messages() if "Morning briefing 2030-01-06" in json.dumps(m)]
    assert "gpu_warmup" in json.dumps(message) and "OllamaUnavailable" in json.dumps(message)


def test_a_model_answering_broken_json_does_not_lose_the_nights_findings(resources, sim, store, tmp_path):
    sim.configure(malformed_rate=1.0)  # every answer of the local model is broken JSON
    feed = _rss(tmp_path / "feed.xml", [("b1", "Paged attention explained")])
    run_config = {"ops": {**GREEN_HEALTH, "research_scan": {"config": {"feeds": [feed]}}}}
    result = _run_chain(resources, "2030-01-07", run_config)
    assert result.success
    consolidation = store.knowledge.night_steps("2030-01-07")["knowledge_consolidation"]["output"]
    assert consolidation["unsummarised"] == 1 and "no JSON" in consolidation["errors"][0]
    [memory] = store.knowledge.memories_of_night("2030-01-07")
    assert memory.title == "Paged attention explained" and "unsummarised" in memory.tags
    text = store.knowledge.get_briefing("2030-01-07")["markdown"]
    assert "1 findings kept without the model's summary" in text


def test_generated_dagster_yaml_enables_run_retries_and_limits_the_gpu_pool_to_one(database_url, tmp_path):
    ensure_database(database_url, DAGSTER_DATABASE)
    dagster_url = with_database(database_url, DAGSTER_DATABASE)
    write_dagster_yaml(tmp_path / "earlier", dagster_url)
    with dg.DagsterInstance.from_config(str(tmp_path / "earlier")) as instance:  # as on a fresh storage:
        instance.event_log_storage.delete_concurrency_limit("ollama_gpu")  # the GPU pool has no limit of its own
        assert "ollama_gpu" not in {p.name for p in instance.event_log_storage.get_pool_limits()}

    write_dagster_yaml(tmp_path / "home", dagster_url)  # what `forge dev` does on its first start
    apply_pool_limits(tmp_path / "home")
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:  # Dagster accepts the file
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 3
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 4  # the other pools
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        assert limits["ollama_gpu"] == 1 and "openai_api" not in limits  # one GPU step at a time, no manual step
        assert instance.event_log_storage.get_concurrency_info("ollama_gpu").slot_count == 1
