"""Self-healing: known failures map to remedies (matched by class, never by a stray word), at most 3
attempts per signal with a cooldown, recorded in PostgreSQL, then one notification and no more tries; a
remedy is bounded well inside a sensor tick, and an attempt whose process died is recorded as such."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import dagster as dg
import pytest

from forge_dagster.assets.nightly import gpu_release
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.nightly.healing import (
    HEALING_TOPIC,
    HealingPolicy,
    Signal,
    classify_failure,
    heal,
    restart_command_remedy,
    sweep_remedy,
)
from forge_dagster.core.store import JobSpec
from forge_dagster.resources.ollama import OllamaResource
from forge_dagster.sensors.healing import healing_sensor
from tests.helpers import ROOT, wait_until


def _outbox(store, topic: str) -> list[tuple]:
    with store.transaction() as conn:
        return conn.execute("SELECT key, payload FROM outbox WHERE topic = %s ORDER BY id", (topic,)).fetchall()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counting_command(path) -> str:
    """A restart hook that appends a line to `path` each time it runs (a real process, no shell)."""
    return f"{sys.executable} -c \"open({str(path)!r}, 'a').write('restart\\n')\""


def test_known_failures_map_to_their_signals():
    assert classify_failure([("ConnectionError", "Failed to connect to Ollama. Please check that Ollama is "
                                                 "downloaded, running and accessible.")]) == Signal.OLLAMA_DOWN
    assert classify_failure([("OllamaUnavailable", "forge_dagster.core.nightly.ollama.OllamaUnavailable: Ollama "
                                                   "at http://x answered 500: boom\n")]) == Signal.OLLAMA_DOWN
    assert classify_failure([("ConnectionError", "redis.exceptions.ConnectionError: Error 111 connecting to "
                                                 "127.0.0.1:6379. Connection refused.\n")]) == Signal.REDIS_DOWN
    assert classify_failure([("TimeoutError", "Timeout reading from socket")]) == Signal.REDIS_DOWN
    assert classify_failure([("LeaseLost", "job 12: lease 3f2a no longer held")]) == Signal.STALE_LEASES
    assert classify_failure([("ValueError", "bad processor config")]) is None


def test_a_lost_gpu_lock_is_its_own_signal_not_stale_job_leases():
    # As Dagster reports a step that raised LockLost: the step error, caused by the qualified exception.
    gpu = [("DagsterExecutionStepExecutionError", 'Error occurred while executing op "triage":\n'),
           ("LockLost", "forge_dagster.core.nightly.gpu_mutex.LockLost: forge:mutex:gpu: lease 3 is no longer held\n")]
    assert classify_failure(gpu) == Signal.GPU_LOCK_LOST
    assert classify_failure([("FencedOut", "forge:mutex:gpu: fence 4 is stale")]) == Signal.GPU_LOCK_LOST


def test_words_in_an_unrelated_failure_do_not_trigger_a_remedy():
    assert classify_failure([("ValueError", "the lease 4 is no longer held, says the report")]) is None
    assert classify_failure([("RuntimeError", "OllamaUnavailable was logged earlier; redis connection pool ok")]) is None
    assert classify_failure([("ConnectionError", "could not reach the provider: Error 111 connecting to api")]) is None
    assert classify_failure([(None, "Execution of run failed: LeaseLost in step x")]) is None  # run message


def test_healing_stops_after_three_attempts_then_notifies_once(store, tmp_path):
    log = tmp_path / "restarts.log"
    remedy = restart_command_remedy(_counting_command(log), lambda: None, wait_s=1)
    policy = HealingPolicy(max_attempts=3, cooldown_s=0)
    outcomes = [heal(store.knowledge, Signal.OLLAMA_DOWN, f"run{i}", remedy, policy, failure="ollama down")
                for i in range(6)]
    assert [o.action for o in outcomes] == ["remedy"] * 3 + ["gave_up", "skip", "skip"]
    assert all(o.outcome == "ok" for o in outcomes[:3])
    assert log.read_text().count("restart") == 3  # the hook really ran three times, no more
    history = store.knowledge.healing_history(Signal.OLLAMA_DOWN)
    assert [(h["action"], h["outcome"]) for h in history] == [("remedy", "ok")] * 3 + [("gave_up", "notified")]
    notices = _outbox(store, HEALING_TOPIC)
    assert len(notices) == 1 and "gave up on `ollama_down` after 3 attempts" in notices[0][1]["text"]
    # Another signal has its own count.
    other = heal(store.knowledge, Signal.REDIS_DOWN, "run9", lambda: "up", policy)
    assert (other.action, other.outcome) == ("remedy", "ok")


def test_cooldown_prevents_a_second_remedy_for_the_same_signal(store):
    policy = HealingPolicy(max_attempts=3, cooldown_s=3600)
    first = heal(store.knowledge, Signal.REDIS_DOWN, "r1", lambda: "up", policy)
    second = heal(store.knowledge, Signal.REDIS_DOWN, "r2", lambda: "up", policy)
    assert first.action == "remedy" and second.action == "skip" and "cooling down" in second.detail
    assert len(store.knowledge.healing_history(Signal.REDIS_DOWN)) == 1


def test_a_failed_remedy_is_recorded_and_counts_as_an_attempt(store):
    remedy = restart_command_remedy(None, lambda: None)
    outcome = heal(store.knowledge, Signal.OLLAMA_DOWN, "r1", remedy, HealingPolicy(cooldown_s=0))
    assert (outcome.action, outcome.outcome) == ("remedy", "failed")
    assert "no restart command configured" in store.knowledge.healing_history()[0]["detail"]


def test_a_restart_command_that_hangs_is_cut_off_at_the_budget(store):
    hang = f"{sys.executable} -c \"import time; time.sleep(120)\""
    remedy = restart_command_remedy(hang, lambda: None, wait_s=30, budget_s=0.5)
    outcome = heal(store.knowledge, Signal.OLLAMA_DOWN, "r1", remedy, HealingPolicy(cooldown_s=0, remedy_budget_s=0.5))
    assert (outcome.action, outcome.outcome) == ("remedy", "failed")
    assert "still running after 0.5s; killed" in outcome.detail
    assert [h["outcome"] for h in store.knowledge.healing_history()] == ["failed"]


def test_an_attempt_whose_process_died_is_recorded_as_interrupted_and_still_counts(store, database_url, schema,
                                                                                   tmp_path):
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import pathlib, time
        from forge_dagster.core.nightly.healing import HealingPolicy, Signal, heal
        from forge_dagster.core.store import ForgeStore
        def remedy():
            pathlib.Path({str(started)!r}).write_text("started")
            time.sleep(120)  # killed here, before any outcome is recorded
        with ForgeStore({database_url!r}, {schema!r}, pool_size=1) as store:
            heal(store.knowledge, Signal.OLLAMA_DOWN, "crashed", remedy, HealingPolicy(remedy_budget_s=0.5))
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_until(started.exists, timeout_s=60, what="the remedy to start")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert [h["outcome"] for h in store.knowledge.healing_history()] == ["running"]
    policy = HealingPolicy(max_attempts=2, cooldown_s=0, remedy_budget_s=0.5)
    wait_until(lambda: _age_s(store) > policy.interrupted_after_s, timeout_s=30, what="the attempt to go stale")
    assert heal(store.knowledge, Signal.OLLAMA_DOWN, "r2", lambda: "up", policy).outcome == "ok"
    history = store.knowledge.healing_history()
    assert [(h["run_id"], h["outcome"]) for h in history] == [("crashed", "interrupted"), ("r2", "ok")]
    assert "stopped before it finished" in history[0]["detail"]
    # The interrupted attempt counts: with two allowed, the third failure gives up.
    assert heal(store.knowledge, Signal.OLLAMA_DOWN, "r3", lambda: "up", policy).action == "gave_up"


def test_a_remedy_stopped_by_its_process_ending_is_recorded_as_interrupted(store):
    def stopped() -> str:
        raise SystemExit(1)  # as when the code server shuts down mid-tick

    with pytest.raises(SystemExit):
        heal(store.knowledge, Signal.REDIS_DOWN, "r1", stopped, HealingPolicy())
    assert [h["outcome"] for h in store.knowledge.healing_history()] == ["interrupted"]


def _age_s(store) -> float:
    with store.transaction() as conn:
        return float(conn.execute("SELECT extract(epoch FROM now() - min(at)) FROM healing_attempts").fetchone()[0])


def test_stale_lease_remedy_returns_expired_jobs_to_pending(store):
    [job_id] = submit_jobs(store, [JobSpec("p", {"n": 1}, mode="realtime")]).accepted
    store.jobs.claim(1, mode="realtime", ttl_s=0.2)
    wait_until(lambda: _lease_expired(store, job_id), timeout_s=10, what="the lease to expire")
    outcome = heal(store.knowledge, Signal.STALE_LEASES, "r1", sweep_remedy(store), HealingPolicy())
    assert outcome.outcome == "ok" and "1 requeued" in outcome.detail
    assert store.jobs.counts() == {"pending": 1}


def _lease_expired(store, job_id: int) -> bool:
    with store.transaction() as conn:
        return conn.execute("SELECT lease_expires_at < now() FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]


def test_run_failure_sensor_runs_the_restart_hook_for_a_run_that_failed_on_ollama(
        resources, store, tmp_path, monkeypatch):
    log = tmp_path / "restarts.log"
    monkeypatch.setenv("FORGE_NIGHTLY_OLLAMA_RESTART_CMD", _counting_command(log))
    monkeypatch.setenv("FORGE_NIGHTLY_HEALING_COOLDOWN_S", "0")
    monkeypatch.setenv("FORGE_NIGHTLY_HEALING_WAIT_S", "0.2")
    down = {**resources, "ollama": OllamaResource(host=f"http://127.0.0.1:{_closed_port()}", timeout_s=5)}
    instance = dg.DagsterInstance.ephemeral()
    messages = []
    for _ in range(4):  # the release is the step that fails (the others record the failure and go on)
        result = dg.materialize([gpu_release], resources=down, instance=instance, raise_on_error=False)
        assert not result.success
        with dg.build_run_status_sensor_context(  # the store's resource has a lifecycle: a context manager
            sensor_name="healing_sensor", dagster_event=result.get_run_failure_event(),
            dagster_instance=instance, dagster_run=result.dagster_run, resources=down,
        ) as context:
            messages.append(healing_sensor(context.for_run_failure()).skip_message)
    assert all("ollama_down" in m for m in messages)
    # The hook ran for the first three failures (Ollama stayed down, so each attempt is a failed remedy),
    # then the healer gave up and said so once.
    assert log.read_text().count("restart") == 3
    assert "gave_up" in messages[3]
    assert len(_outbox(store, HEALING_TOPIC)) == 1
