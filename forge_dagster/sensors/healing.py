"""Self-healing and telling: a run-failure sensor that first tells Slack (once, through the outbox) that a
nightly run failed, with each failed step's error; then maps known failures to remedies (stale leases -> sweep,
GPU lock lost or Redis down -> wait for Redis, Ollama down -> restart command hook), at most 3 attempts per
signal with a cooldown, recorded in PostgreSQL; then it notifies once through the outbox and stops trying.

A remedy runs in the sensor's tick, bounded by FORGE_NIGHTLY_HEALING_BUDGET_S (30 s) so it ends well
within the tick's timeout; probes use clients with short timeouts. Re-running the failed run is
Dagster's own run retries (`run_retries` in the generated dagster.yaml).
"""

import dagster as dg

from forge_dagster.assets.nightly_support import NIGHT_TAG
from forge_dagster.constants import DEAD_RUN_TAG
from forge_dagster.core.nightly import notices
from forge_dagster.core.nightly.gpu_mutex import connect
from forge_dagster.core.nightly.healing import (
    HealingPolicy,
    Signal,
    classify_failure,
    heal,
    restart_command_remedy,
    sweep_remedy,
    wait_remedy,
)
from forge_dagster.core.nightly.ollama import OllamaRuntime
from forge_dagster.core.nightly.settings import load_nightly_settings
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource


def failure_errors(context: dg.RunFailureSensorContext) -> list[tuple[str | None, str]]:
    """(class name, message) of every step error of the failed run, causes included, then the run's."""
    found: list[tuple[str | None, str]] = []

    def walk(error) -> None:
        while error is not None:
            found.append((error.cls_name, error.message))
            if error.context is not None:
                walk(error.context)
            error = error.cause

    for event in context.get_step_failure_events():
        walk(event.step_failure_data.error)
    found.append((None, context.failure_event.message or ""))
    return found


PROBE_TIMEOUT_S = 5.0


def failed_steps(context: dg.RunFailureSensorContext) -> list[tuple[str, str]]:
    """(step, error) of each step that failed in the run."""
    found = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        found.append((event.step_key or "?", f"{error.cls_name}: {error.message.strip()}" if error else "failed"))
    return found


def tell_nightly_failure(context: dg.RunFailureSensorContext, repo) -> bool:
    """One Slack message through the outbox for a failed nightly run (once per run)."""
    run = context.dagster_run
    if run.job_name not in notices.NIGHTLY_JOBS and NIGHT_TAG not in run.tags:
        return False
    return notices.run_failed(repo, job=run.job_name, run_id=run.run_id, night=run.tags.get(NIGHT_TAG),
                              steps=failed_steps(context), message=context.failure_event.message or "")


@dg.run_failure_sensor(name="healing_sensor", minimum_interval_seconds=30,
                       default_status=dg.DefaultSensorStatus.RUNNING)
def healing_sensor(context: dg.RunFailureSensorContext, lease_store: LeaseStoreResource,
                   gpu_mutex: GpuMutexResource, ollama: OllamaResource):
    """Applies the remedy for a failed run's known signal, within the attempt cap and cooldown."""
    run_id = context.dagster_run.run_id
    told = tell_nightly_failure(context, lease_store.knowledge)
    if told:
        context.log.info(f"run {run_id[:8]}: nightly failure told through the outbox")
    if DEAD_RUN_TAG in context.dagster_run.tags:  # its claims were given back when it was found dead
        return dg.SkipReason(f"run {run_id[:8]} was found dead ({context.dagster_run.tags[DEAD_RUN_TAG]}); "
                             "the work sensors ask for its work again")
    errors = failure_errors(context)
    signal = classify_failure(errors)
    if signal is None:
        return dg.SkipReason(f"run {run_id[:8]}: no known remedy for this failure")
    settings = load_nightly_settings()
    policy = HealingPolicy(settings.healing_max_attempts, settings.healing_cooldown_s, settings.healing_window_s,
                           settings.healing_budget_s)
    budget, wait_s = settings.healing_budget_s, settings.healing_wait_s
    probe_ollama = OllamaRuntime(ollama.resolved_host(), timeout_s=PROBE_TIMEOUT_S).available_models

    def ping_redis() -> None:
        client = connect(gpu_mutex.resolved_url(), timeout_s=PROBE_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()

    remedies = {
        Signal.STALE_LEASES: lambda: sweep_remedy(lease_store.store),
        Signal.GPU_LOCK_LOST: lambda: wait_remedy(ping_redis, wait_s=wait_s, budget_s=budget),
        Signal.OLLAMA_DOWN: lambda: restart_command_remedy(settings.ollama_restart_cmd, probe_ollama, wait_s=wait_s,
                                                           budget_s=budget),
        Signal.REDIS_DOWN: lambda: wait_remedy(ping_redis, wait_s=wait_s, budget_s=budget),
    }
    failure = next((f"{cls}: {msg}" for cls, msg in errors if cls), errors[-1][1])
    outcome = heal(lease_store.knowledge, signal, run_id, remedies[signal](), policy, failure=failure)
    message = f"run {run_id[:8]}: {signal} -> {outcome.action} ({outcome.outcome}) {outcome.detail or ''}".strip()
    context.log.info(message)
    return dg.SkipReason(message)
