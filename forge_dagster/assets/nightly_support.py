"""What the nightly assets share: the night a run works for, earlier steps' outputs, skipping a step
that is not configured, each step's asset check, and telling about GPU waits (mutex and pool)."""

import time

import dagster as dg

from forge_dagster.core.nightly import notices
from forge_dagster.core.nightly.gpu_steps import TimedMutex
from forge_dagster.core.nightly.settings import load_nightly_settings, night_key
from forge_dagster.resources.gpu import GpuMutexResource

NIGHT_TAG = "forge/night"
LEVEL_TAG = "forge/night_level"
STEP_CHECK = "step_succeeded"
POOL_BLOCKED = "Step blocked by limit for pool"


def night_of(context: dg.AssetExecutionContext) -> str:
    """The night this run works for: the schedule's `forge/night` tag, else today in the nightly timezone."""
    return context.run.tags.get(NIGHT_TAG) or night_key(load_nightly_settings().timezone)


def step_output(repo, night: str, name: str) -> dict:
    """What an earlier step recorded for the night (dg.Failure when it has neither run nor been skipped;
    a skipped step reads as an empty output)."""
    steps = repo.night_steps(night)
    if name in steps:
        return steps[name]["output"]
    if name in repo.night_skips(night):
        return {}
    raise dg.Failure(f"step {name!r} has not run for night {night}: materialise it first")


def usage_meta(usage: dict[str, int]) -> dict[str, dg.MetadataValue]:
    return {f"ollama.{k}": dg.MetadataValue.int(int(v)) for k, v in usage.items()}


def error_meta(output: dict) -> dict[str, str]:
    return {"error": output["error"]} if output.get("error") else {}


def step_check(asset: str) -> list[dg.AssetCheckSpec]:
    """The check every step reports: it ran without recording an error (a skipped step passes)."""
    return [dg.AssetCheckSpec(STEP_CHECK, asset=asset,
                              description="The step ran without recording an error; a skipped step passes and "
                                          "says why. ERROR severity: a failed step is red in the lineage.")]


def check_result(output: dict | None = None, *, skipped: str | None = None) -> dg.AssetCheckResult:
    """The step's check: failed with ERROR severity when the step recorded an error."""
    error = (output or {}).get("error")
    meta = {"skipped": skipped} if skipped else {"error": error} if error else {}
    return dg.AssetCheckResult(check_name=STEP_CHECK, passed=not error, severity=dg.AssetCheckSeverity.ERROR,
                               metadata=meta, description=error or skipped)


def skipped(context: dg.AssetExecutionContext, repo, night: str, step: str, reason: str) -> dg.MaterializeResult:
    """Record that the step did not run tonight and why (the briefing says so), and report it."""
    repo.skip_step(night, step, reason)
    context.log.info(f"{step} skipped for night {night}: {reason}")
    return dg.MaterializeResult(metadata={"night": night, "skipped": reason}, check_results=[check_result(skipped=reason)])


def timed_gpu(gpu_mutex: GpuMutexResource, store) -> TimedMutex:
    """The GPU mutex for a step that writes to `store`, timing each wait for the lock."""
    return TimedMutex(gpu_mutex.mutex_for(store))


def pool_held_s(context: dg.AssetExecutionContext, step: str) -> float | None:
    """How long this step was held by its Dagster pool before it started (None: it was not held), from
    the engine events Dagster writes for a step blocked by a pool's limit."""
    records = context.instance.get_records_for_run(context.run.run_id,
                                                    of_type=dg.DagsterEventType.ENGINE_EVENT).records
    blocked = [r.event_log_entry.timestamp for r in records
               if r.event_log_entry.step_key == step and POOL_BLOCKED in (r.event_log_entry.message or "")]
    return time.time() - min(blocked) if blocked else None


def tell_waits(context: dg.AssetExecutionContext, repo, night: str, step: str, gpu: TimedMutex | None,
               pool_held: float | None) -> dict[str, dg.MetadataValue]:
    """A wait on the GPU mutex or pool over the threshold: a log line, the step's metadata and one
    Slack message. Returns the metadata (every wait, told or not)."""
    threshold = load_nightly_settings().gpu_wait_notify_s
    meta: dict[str, dg.MetadataValue] = {}
    waits = {"mutex": gpu.longest_wait_s if gpu is not None and gpu.waits else None, "pool": pool_held}
    for kind, waited in waits.items():
        if waited is None:
            continue
        meta[f"gpu_{kind}_wait_s"] = dg.MetadataValue.float(round(waited, 3))
        if notices.over_threshold(waited, threshold):
            context.log.warning(f"{step} waited {waited:.1f} s for the GPU {kind} (threshold {threshold:g} s)")
            notices.gpu_wait(repo, night=night, step=step, run_id=context.run.run_id, waited_s=waited, kind=kind,
                             threshold_s=threshold)
    return meta
