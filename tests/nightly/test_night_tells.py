"""Every failure and every wait of the night is told in Slack, through the outbox: a failed nightly run,
a GPU wait over the threshold, healing giving up, a re-run that changes the night's briefing; and a RED
night is red in Dagster (a failed run, ERROR checks, the level as a run tag)."""

from __future__ import annotations

import socket
import threading
import time

import dagster as dg

from forge_dagster.assets.nightly import NIGHT_TAG, gpu_warmup, health_checks, morning_briefing, triage
from forge_dagster.assets.nightly_support import LEVEL_TAG
from forge_dagster.core.nightly.gpu_mutex import GpuMutex, connect
from forge_dagster.core.nightly.healing import HealingPolicy, heal
from forge_dagster.definitions import build_definitions
from forge_dagster.resources.ollama import OllamaResource
from forge_dagster.sensors.healing import healing_sensor
from tests.nightly.night_helpers import slack_until

GREEN_HEALTH = {"health_checks": {"config": {"require_daemon": False}}}
RED_HEALTH = {"health_checks": {"config": {"require_daemon": False, "disk_min_free_gb": 1e9}}}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, what: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_failed_nightly_run_is_one_slack_message_naming_the_step_and_its_error(resources, sim, store, tmp_path):
    down = {**resources, "ollama": OllamaResource(host=f"http://127.0.0.1:{_closed_port()}", timeout_s=5)}
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(down).resolve_job_def("nightly_chain")
    result = job.execute_in_process(run_config={"ops": GREEN_HEALTH}, tags={NIGHT_TAG: "2030-02-01"},
                                    instance=instance, raise_on_error=False)
    assert not result.success
    # The briefing was written by the failing release, after it tried: it names the failures.
    text = store.knowledge.get_briefing("2030-02-01")["markdown"]
    assert "Step `gpu_release` failed: OllamaUnavailable" in text
    for _ in range(2):  # a sensor tick run twice still tells once
        with dg.build_run_status_sensor_context(
                sensor_name="healing_sensor", dagster_event=result.get_run_failure_event(), dagster_instance=instance,
                dagster_run=result.dagster_run, resources=down) as context:
            healing_sensor(context.for_run_failure())
    [message] = slack_until(store, sim, tmp_path, "Nightly run failed")
    body = str(message)
    assert "gpu_release" in body and "OllamaUnavailable" in body and "2030-02-01" in body
    assert slack_until(store, sim, tmp_path, "Morning briefing 2030-02-01")


def test_a_red_night_is_red_in_dagster_and_a_rerun_posts_a_correction(resources, sim, store, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(resources).resolve_job_def("nightly_chain")
    green = job.execute_in_process(run_config={"ops": GREEN_HEALTH}, tags={NIGHT_TAG: "2030-02-02"},
                                   instance=instance)
    assert green.success
    assert slack_until(store, sim, tmp_path, "Morning briefing 2030-02-02: GREEN")

    red = job.execute_in_process(run_config={"ops": RED_HEALTH}, tags={NIGHT_TAG: "2030-02-02"}, instance=instance,
                                 raise_on_error=False)
    assert not red.success  # red in the runs list
    assert [e.step_key for e in red.all_events if e.is_step_failure] == ["morning_briefing"]
    assert instance.get_run_by_id(red.run_id).tags[LEVEL_TAG] == "RED"
    checks = {(e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name):
              e.asset_check_evaluation_data for e in red.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    level = checks[("triage", "night_level")]
    assert not level.passed and level.severity == dg.AssetCheckSeverity.ERROR
    assert not checks[("morning_briefing", "night_status")].passed
    # The briefing is the asset's markdown, and Slack is told it was corrected.
    [materialization] = red.asset_materializations_for_node("morning_briefing")
    assert "Night status: RED" in materialization.metadata["briefing"].value
    assert materialization.metadata["slack"].value == "corrected"
    [correction] = slack_until(store, sim, tmp_path, "Correction: briefing 2030-02-02 is now RED")
    assert "disk" in str(correction)


def test_a_gpu_wait_over_the_threshold_is_logged_kept_and_told(resources, sim, store, tmp_path, monkeypatch,
                                                               redis_url, mutex_name):
    monkeypatch.setenv("FORGE_NIGHTLY_GPU_WAIT_NOTIFY_S", "0")
    mutex = GpuMutex(connect(redis_url), mutex_name, ttl_ms=5000)
    lease = mutex.acquire(5)  # another holder has the GPU
    results = []
    runner = threading.Thread(target=lambda: results.append(dg.materialize(
        [gpu_warmup], resources=resources, tags={NIGHT_TAG: "2030-02-03"})))
    runner.start()
    _wait_for(lambda: mutex.redis.pubsub_numsub(mutex.channel)[0][1] > 0, "the warm-up to wait on the mutex")
    lease.release()
    runner.join(timeout=60)
    [result] = results
    meta = result.asset_materializations_for_node("gpu_warmup")[0].metadata
    assert meta["gpu_mutex_wait_s"].value > 0
    [message] = slack_until(store, sim, tmp_path, "GPU wait: gpu_warmup")
    assert "GPU mutex" in str(message)


def test_a_step_held_by_the_gpu_pool_is_told(resources, sim, store, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_NIGHTLY_GPU_WAIT_NOTIFY_S", "0")
    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))  # storage that keeps pool slots
    storage = instance.event_log_storage
    storage.set_concurrency_slots("ollama_gpu", 1)
    storage.claim_concurrency_slot("ollama_gpu", "another-run", "train_adapter_op")  # a training run holds it
    results = []
    runner = threading.Thread(target=lambda: results.append(dg.materialize(
        [gpu_warmup], resources=resources, instance=instance, tags={NIGHT_TAG: "2030-02-04"})))
    runner.start()

    def blocked() -> bool:
        runs = instance.get_runs()
        return bool(runs) and any("blocked by limit for pool" in (r.event_log_entry.message or "") for r in
                                  instance.get_records_for_run(runs[0].run_id).records)

    _wait_for(blocked, "the warm-up to be held by the pool")
    storage.free_concurrency_slots_for_run("another-run")
    runner.join(timeout=120)
    [result] = results
    assert result.asset_materializations_for_node("gpu_warmup")[0].metadata["gpu_pool_wait_s"].value > 0
    [message] = slack_until(store, sim, tmp_path, "GPU wait: gpu_warmup")
    assert "ollama_gpu" in str(message)


def test_healing_giving_up_is_one_slack_message(store, sim, tmp_path):
    def broken() -> str:
        raise RuntimeError("ollama still down")

    policy = HealingPolicy(max_attempts=3, cooldown_s=0)
    outcomes = [heal(store.knowledge, "ollama_down", f"run{i}", broken, policy, failure="OllamaUnavailable")
                for i in range(5)]
    assert [o.action for o in outcomes] == ["remedy", "remedy", "remedy", "gave_up", "skip"]
    [message] = slack_until(store, sim, tmp_path, "Self-healing gave up")
    assert "ollama_down" in str(message) and "operator is needed" in str(message)


def test_triage_and_health_checks_report_their_checks(resources, store):
    result = dg.materialize([health_checks, triage], resources=resources, run_config={"ops": RED_HEALTH},
                            tags={NIGHT_TAG: "2030-02-05"})
    assert result.success  # the checks are not blocking: the chain goes on to tell
    evaluations = [e.asset_check_evaluation_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {(c.asset_key.to_user_string(), c.check_name, c.passed) for c in evaluations} == {
        ("health_checks", "step_succeeded", True), ("triage", "step_succeeded", True),
        ("triage", "night_level", False)}
    _ = morning_briefing  # the blocking check lives on the briefing (see the RED night test)
