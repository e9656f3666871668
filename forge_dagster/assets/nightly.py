"""The nightly chain: gpu_warmup -> health_checks -> triage -> code_review, security_review, pr_digest,
research_scout, research_scan, ecosystem_watch, job_outcomes -> evolution -> knowledge_consolidation ->
atlas -> gpu_release -> morning_briefing; and the weekly memory digest.

Each asset is a thin step: it calls engine functions in `core/nightly`, records its output for the night
in PostgreSQL (`nightly_steps`; a step that is not configured records why in `nightly_skips`), reports
counts, and an asset check: a step that recorded an error fails its check with ERROR severity, and the
triage level is a check of its own (ERROR when RED) and the run tag `forge/night_level`. Steps that use
the GPU take the Dagster pool `ollama_gpu` and hold the Redis GPU mutex around the model calls, saving
their output under the lease's fence; a wait on either over FORGE_NIGHTLY_GPU_WAIT_NOTIFY_S is logged,
put in the step's metadata and told in Slack. The briefing is written after the last step (the GPU
release included; when the release fails it writes the briefing before failing the run), and its
blocking check fails the run of a RED night, so the night's colour is Dagster's. To add a step, see
"Adding a nightly step" in docs/nightly.md.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from forge_dagster.assets.nightly_research import ecosystem_watch, research_scan, research_scout
from forge_dagster.assets.nightly_reviews import code_review, pr_digest_summary, security_review
from forge_dagster.assets.nightly_support import (
    LEVEL_TAG,
    NIGHT_TAG,
    check_result,
    error_meta,
    night_of,
    pool_held_s,
    skipped,
    step_check,
    step_output,
    tell_waits,
    timed_gpu,
    usage_meta,
)
from forge_dagster.constants import GPU_POOL, NIGHTLY_GROUP
from forge_dagster.core.config import load_settings
from forge_dagster.core.nightly import atlas as atlas_map
from forge_dagster.core.nightly import briefing, consolidation, findings, gpu_steps, health
from forge_dagster.core.nightly import evolution as trends
from forge_dagster.core.nightly.forge_work import work_summary
from forge_dagster.core.nightly.settings import load_nightly_settings
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource
from forge_dagster.resources.provider_keys import ProviderKeysResource

__all__ = ["NIGHT_TAG", "NIGHTLY_CHAIN", "research_scan", "weekly_memory_digest"]


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama", "redis"}, pool=GPU_POOL, check_specs=step_check("gpu_warmup"))
def gpu_warmup(context: dg.AssetExecutionContext, gpu_mutex: GpuMutexResource, ollama: OllamaResource,
               lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """The local model loaded on the GPU for the night (an empty prompt loads it), under the GPU mutex.
    When Ollama or Redis is down the failure is recorded, and the health checks report it."""
    night, store, held = night_of(context), lease_store.store, pool_held_s(context, "gpu_warmup")
    gpu = timed_gpu(gpu_mutex, store)
    out = gpu_steps.warm_up(gpu, gpu_mutex.timeout_s, ollama.runtime, store.knowledge, night)
    return dg.MaterializeResult(metadata={
        "night": night, "model": out["model"], "loaded": ", ".join(out.get("loaded") or []) or "none",
        **tell_waits(context, store.knowledge, night, "gpu_warmup", gpu, held), **error_meta(out),
    }, check_results=[check_result(out)])


class HealthConfig(dg.Config):
    require_daemon: bool = True  # no daemon heartbeat is a warning (False: runs outside the daemon are fine)
    disk_min_free_gb: float | None = None  # default: FORGE_NIGHTLY_DISK_MIN_FREE_GB


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "postgres"}, deps=[gpu_warmup], check_specs=step_check("health_checks"))
def health_checks(context: dg.AssetExecutionContext, config: HealthConfig, lease_store: LeaseStoreResource,
                  gpu_mutex: GpuMutexResource, ollama: OllamaResource, provider_keys: ProviderKeysResource
                  ) -> dg.MaterializeResult:
    """Disk, PostgreSQL, Redis, providers, Ollama, the Dagster daemon, queue depths, failure rates and
    the outbox, each ok / warn / fail with the numbers behind it."""
    night, settings, store = night_of(context), load_nightly_settings(), lease_store.store
    if config.disk_min_free_gb is not None:
        settings.disk_min_free_gb = config.disk_min_free_gb
    runtime = ollama.runtime
    results = health.run_checks({
        "disk": health.disk_check(load_settings().forge_home, settings.disk_min_free_gb),
        "postgres": health.postgres_check(store.url),
        "redis": health.redis_check(gpu_mutex.resolved_url()),
        "providers": health.providers_check(provider_keys.ports),
        "ollama": health.ollama_check(runtime.host, runtime.model),
        "queues": health.queue_check(store, settings),
        "failure_rates": health.failure_rate_check(store, settings),
        "outbox": health.outbox_check(store, settings),
    })
    beats = {kind: hb.timestamp for kind, hb in context.instance.get_daemon_heartbeats().items()}
    results.append(health.daemon_check(beats, required=config.require_daemon,
                                       max_age_s=settings.daemon_heartbeat_max_s))
    warmup = store.knowledge.night_steps(night).get(gpu_steps.WARMUP)
    if warmup is not None:
        results.append(health.warmup_check(warmup["output"]))
    store.knowledge.save_step(night, "health_checks", {"checks": [r.to_dict() for r in results]})
    rows = "\n".join(f"| {r.name} | {r.status} | {r.summary} |" for r in results)
    return dg.MaterializeResult(metadata={
        "night": night,
        "failing": dg.MetadataValue.int(sum(r.status == health.FAIL for r in results)),
        "warning": dg.MetadataValue.int(sum(r.status == health.WARN for r in results)),
        "checks": dg.MetadataValue.md("| check | status | summary |\n|---|---|---|\n" + rows),
    }, check_results=[check_result()])


LEVEL_SEVERITY = {"RED": dg.AssetCheckSeverity.ERROR, "AMBER": dg.AssetCheckSeverity.WARN}


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "ollama"}, deps=[health_checks], pool=GPU_POOL,
          check_specs=[*step_check("triage"), dg.AssetCheckSpec(
              "night_level", asset="triage", description="The night's level by the rules: RED fails with ERROR "
                                                        "severity, AMBER with WARN; GREEN passes.")])
def triage(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource, gpu_mutex: GpuMutexResource,
           ollama: OllamaResource) -> dg.MaterializeResult:
    """The night's level from a deterministic rule score: GREEN short-circuits with no model call; only
    the anomalous checks go to the local model (under the GPU mutex) for a threat assessment. The level is
    the run tag `forge/night_level` and the check `night_level`."""
    night, store, held = night_of(context), lease_store.store, pool_held_s(context, "triage")
    checks = [health.CheckResult.from_dict(c) for c in step_output(store.knowledge, night, "health_checks")["checks"]]
    gpu = timed_gpu(gpu_mutex, store)
    result = gpu_steps.assess(gpu, gpu_mutex.timeout_s, ollama.runtime, store.knowledge, night, checks)
    context.instance.add_run_tags(context.run.run_id, {LEVEL_TAG: result.level})
    level_check = dg.AssetCheckResult(
        check_name="night_level", passed=result.level == "GREEN",
        severity=LEVEL_SEVERITY.get(result.level, dg.AssetCheckSeverity.WARN),
        metadata={"level": result.level, "score": result.score,
                  "anomalies": ", ".join(f"{a.name} {a.status}" for a in result.anomalies) or "none"},
        description="; ".join(f"{a.name} {a.status}: {a.summary}" for a in result.anomalies) or None)
    return dg.MaterializeResult(metadata={
        "night": night, "level": result.level, "score": dg.MetadataValue.int(result.score),
        "anomalies": dg.MetadataValue.int(len(result.anomalies)), "model_called": result.model_called,
        **usage_meta(result.usage), **error_meta(result.assessment or {}),
        **tell_waits(context, store.knowledge, night, "triage", gpu, held),
    }, check_results=[check_result(), level_check])


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "postgres"}, deps=[triage], check_specs=step_check("job_outcomes"))
def job_outcomes(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """Forge's own work over the window: jobs by outcome, invalid and failure rates, top failure reasons,
    retries, costs by model and batches that ended badly (from the jobs, job_events, costs and batches
    tables)."""
    night, settings = night_of(context), load_nightly_settings()
    since = datetime.now(UTC) - timedelta(hours=settings.window_h)
    outcomes = work_summary(lease_store.knowledge.job_outcomes(since))
    lease_store.knowledge.save_step(night, "job_outcomes", outcomes)
    return dg.MaterializeResult(metadata={
        "night": night, "jobs_finished": dg.MetadataValue.int(outcomes["finished"]),
        "invalid_rate": dg.MetadataValue.float(float(outcomes["invalid_rate"])),
        "cost_usd": dg.MetadataValue.float(float(outcomes["cost_usd"])), "retries": dg.MetadataValue.int(outcomes["retries"]),
    }, check_results=[check_result()])


FINDING_STEPS = [code_review, security_review, pr_digest_summary, research_scout, research_scan, ecosystem_watch,
                 job_outcomes]


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "postgres"}, deps=FINDING_STEPS, check_specs=step_check("evolution"))
def evolution(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """Week over week: the seven nights to tonight against the seven before (jobs, invalid rate, cost, the
    night's level, review findings, papers, articles, dependency updates); the moves worth telling."""
    night, repo = night_of(context), lease_store.knowledge
    (first, last), (before_first, before_last) = trends.weeks(night)
    last_week = repo.steps_between(before_first, before_last, trends.STEPS)
    if not last_week:
        return skipped(context, repo, night, "evolution", f"no nights recorded in the week before ({before_first} "
                                                          f"to {before_last}) to compare with")
    out = trends.trends(repo.steps_between(first, last, trends.STEPS), last_week)
    repo.save_step(night, "evolution", out)
    return dg.MaterializeResult(metadata={
        "night": night, "moves": dg.MetadataValue.md("\n".join(f"- {m['text']}" for m in out["moves"]) or "_steady_"),
        "nights_compared": dg.MetadataValue.int(out["nights_this_week"] + out["nights_last_week"]),
    }, check_results=[check_result(out)])


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama", "postgres"}, deps=[evolution], pool=GPU_POOL,
          check_specs=step_check("knowledge_consolidation"))
def knowledge_consolidation(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource,
                            gpu_mutex: GpuMutexResource, ollama: OllamaResource) -> dg.MaterializeResult:
    """The night's findings (triage, reviews, research, ecosystem, Forge's work, trends) not yet remembered,
    summarised by the local model under the GPU mutex and stored as searchable memories in one fenced
    write; a finding the model could not summarise is kept with its evidence alone."""
    night, store = night_of(context), lease_store.store
    held, repo = pool_held_s(context, "knowledge_consolidation"), store.knowledge
    found = (consolidation.findings_from_triage(step_output(repo, night, "triage"))
             + consolidation.findings_from_research(step_output(repo, night, "research_scan"))
             + consolidation.findings_from_outcomes(step_output(repo, night, "job_outcomes"), night)
             + findings.night_findings(repo.night_steps(night), night))
    gpu = timed_gpu(gpu_mutex, store)
    report = gpu_steps.consolidate(gpu, gpu_mutex.timeout_s, ollama.runtime, repo, night, found)
    return dg.MaterializeResult(metadata={
        "night": night, "findings": dg.MetadataValue.int(report.findings),
        "duplicates": dg.MetadataValue.int(report.duplicates), "stored": dg.MetadataValue.int(len(report.stored)),
        "unsummarised": dg.MetadataValue.int(report.unsummarised), **usage_meta(report.usage),
        **({"errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in report.errors))} if report.errors else {}),
        **tell_waits(context, repo, night, "knowledge_consolidation", gpu, held),
    }, check_results=[check_result()])


class AtlasConfig(dg.Config):
    force: bool = False  # rebuild tonight whatever the weekday


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "markdown"}, deps=[knowledge_consolidation],
          check_specs=step_check("atlas"))
def atlas(context: dg.AssetExecutionContext, config: AtlasConfig, lease_store: LeaseStoreResource
          ) -> dg.MaterializeResult:
    """A browsable markdown atlas of the memories by topic, rebuilt weekly (FORGE_NIGHTLY_ATLAS_WEEKDAY) into
    FORGE_NIGHTLY_ATLAS_DIR (default $FORGE_HOME/atlas); `current/index.md` is the way in."""
    night, repo, s = night_of(context), lease_store.knowledge, load_nightly_settings()
    not_due = None if config.force else atlas_map.due(night, s.atlas_weekday)
    if not_due:
        return skipped(context, repo, night, "atlas", not_due)
    folder = load_settings().forge_home / "atlas" if not s.atlas_dir else Path(s.atlas_dir)
    memories, week = repo.atlas_memories(), atlas_map.week_of(night)
    files = atlas_map.render(memories, week)
    path = atlas_map.write(files, folder, week)
    out = {"path": str(folder / "current" / "index.md"), "build": str(path), "topics": len(files) - 1,
           "memories": len(memories)}
    repo.save_step(night, "atlas", out)
    return dg.MaterializeResult(metadata={
        "night": night, "path": dg.MetadataValue.path(out["path"]), "topics": dg.MetadataValue.int(out["topics"]),
        "index": dg.MetadataValue.md(files["index.md"]),
    }, check_results=[check_result(out)])


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama"}, deps=[atlas], pool=GPU_POOL, check_specs=step_check("gpu_release"))
def gpu_release(context: dg.AssetExecutionContext, gpu_mutex: GpuMutexResource, ollama: OllamaResource,
                lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """The GPU handed back after the chain: every Ollama model unloaded (`keep_alive: 0`), checked with
    `/api/ps`, so a training job can take it. When this fails, the briefing is written (naming the failure)
    and then the run fails, so the healing sensor can act on it."""
    night, store, held = night_of(context), lease_store.store, pool_held_s(context, "gpu_release")
    gpu = timed_gpu(gpu_mutex, store)
    try:
        out = gpu_steps.release(gpu, gpu_mutex.timeout_s, ollama.runtime, store.knowledge, night)
    except Exception:
        tell_waits(context, store.knowledge, night, "gpu_release", gpu, held)
        level, _, sent = write_briefing(context, store.knowledge, night)
        context.log.error(f"GPU release failed; the briefing ({level}) was written first: {sent or 'updated'}")
        raise
    return dg.MaterializeResult(metadata={
        "night": night, "unloaded": ", ".join(out["unloaded"]) or "none",
        **tell_waits(context, store.knowledge, night, "gpu_release", gpu, held),
    }, check_results=[check_result(out)])


# What the briefing expects to have run (or been skipped) before it; one that did not is named under
# "What failed".
BEFORE_BRIEFING = [gpu_warmup, health_checks, triage, *FINDING_STEPS, evolution, knowledge_consolidation, atlas,
                   gpu_release]


def write_briefing(context: dg.AssetExecutionContext, repo, night: str) -> tuple[str, str, str | None]:
    """Render the night's briefing from what it recorded, store it and queue it (or its correction) for
    Slack; tag the run with the level. Returns (level, markdown, "sent" | "corrected" | None)."""
    since = datetime.now(UTC) - timedelta(hours=load_nightly_settings().window_h)
    records = context.instance.get_run_records(filters=dg.RunsFilter(created_after=since), limit=500)
    runs = [{"job": r.dagster_run.job_name, "status": r.dagster_run.status.value, "run_id": r.dagster_run.run_id}
            for r in records if r.dagster_run.run_id != context.run.run_id]
    this_run = context.instance.get_run_record_by_id(context.run.run_id)
    started = this_run.start_time if this_run is not None else None
    level, markdown = briefing.render_briefing(
        night, repo.night_steps(night), runs, repo.memories_of_night(night),
        expected=[a.key.to_user_string() for a in BEFORE_BRIEFING], skips=repo.night_skips(night),
        run_started=started, notices=[text for _, text in repo.night_notices(night)])
    sent = briefing.publish_briefing(repo, night, level, markdown)
    context.instance.add_run_tags(context.run.run_id, {LEVEL_TAG: level})
    return level, markdown, sent


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "slack"}, deps=[gpu_release], check_specs=[dg.AssetCheckSpec(
    "night_status", asset="morning_briefing", blocking=True,
    description="The night as Dagster shows it: RED, or a step that failed, fails this blocking check with "
                "ERROR severity, so the run is red in the runs list.")])
def morning_briefing(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """The morning briefing (markdown: what ran or was skipped, what failed, what it cost, what was learned),
    written after the last step, stored for the night and queued through the outbox for Slack (topic
    `briefing.ready`); a re-run whose level or failures differ posts a correction that replaces it."""
    night, repo = night_of(context), lease_store.knowledge
    level, markdown, sent = write_briefing(context, repo, night)
    failed = briefing.failed_lines(markdown)
    step_failures = [line for line in failed if line.startswith("- Step ")]
    status = dg.AssetCheckResult(
        check_name="night_status", passed=level != "RED" and not step_failures, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"level": level, "failed": len(failed)}, description="\n".join(failed) or None)
    return dg.MaterializeResult(metadata={
        "night": night, "level": level, "queued_for_slack": sent is not None, "slack": sent or "nothing new to tell",
        "briefing": dg.MetadataValue.md(markdown),
    }, check_results=[status])


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama", "postgres"}, pool=GPU_POOL)
def weekly_memory_digest(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource,
                         gpu_mutex: GpuMutexResource, ollama: OllamaResource) -> dg.MaterializeResult:
    """The week's memories compressed: per source family, one digest by the local model (under the GPU
    mutex); the folded memories point to it and leave default search results."""
    repo = lease_store.knowledge
    now = datetime.now(UTC)
    week = f"{now.isocalendar().year}-W{now.isocalendar().week:02d}"
    groups = consolidation.week_groups(repo, now - timedelta(days=7))
    result = {"digests": [], "folded": 0, "groups": [], "usage": {}}
    if groups:
        with gpu_mutex.mutex_for(lease_store.store).hold(gpu_mutex.timeout_s) as lease:
            result = consolidation.compress_week(groups, repo, ollama.runtime, lease, week)
    active, total = repo.count_memories()
    return dg.MaterializeResult(metadata={
        "week": week, "digests": dg.MetadataValue.int(len(result["digests"])),
        "folded": dg.MetadataValue.int(result["folded"]), "memories_active": dg.MetadataValue.int(active),
        "memories_total": dg.MetadataValue.int(total), **usage_meta(result["usage"]),
    })


NIGHTLY_CHAIN = [gpu_warmup, health_checks, triage, code_review, security_review, pr_digest_summary, research_scout,
                 research_scan, ecosystem_watch, job_outcomes, evolution, knowledge_consolidation, atlas, gpu_release,
                 morning_briefing]
