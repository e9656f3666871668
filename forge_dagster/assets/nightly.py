"""The nightly chain: gpu_warmup -> health_checks -> triage -> research_scan + job_outcomes ->
knowledge_consolidation -> morning_briefing -> gpu_release; and the weekly memory digest.

Each asset is a thin step: it calls one engine function in `core/nightly`, records its output for the
night in PostgreSQL (`nightly_steps`, so any later step or a re-run of one step reads it back), and
reports counts. Steps that use the GPU take the Dagster pool `ollama_gpu` and hold the Redis GPU mutex
around the model calls, saving their output under the lease's fence (`core/nightly/gpu_steps.py`). A step
that fails on the GPU records why and lets the chain go on, so the briefing is sent and names the
failure. To add a step, see "Adding a nightly step" in the README.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from forge_dagster.constants import GPU_POOL, NIGHTLY_GROUP
from forge_dagster.core.config import load_settings
from forge_dagster.core.nightly import briefing, consolidation, gpu_steps, health, research
from forge_dagster.core.nightly.settings import load_nightly_settings, night_key
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource
from forge_dagster.resources.provider_keys import ProviderKeysResource

NIGHT_TAG = "forge/night"


def night_of(context: dg.AssetExecutionContext) -> str:
    """The night this run works for: the schedule's `forge/night` tag, else today in the nightly timezone."""
    return context.run.tags.get(NIGHT_TAG) or night_key(load_nightly_settings().timezone)


def _step(lease_store: LeaseStoreResource, night: str, name: str) -> dict:
    """What an earlier step recorded for the night (dg.Failure when it has not run)."""
    steps = lease_store.knowledge.night_steps(night)
    if name not in steps:
        raise dg.Failure(f"step {name!r} has not run for night {night}: materialise it first")
    return steps[name]["output"]


def _usage(usage: dict[str, int]) -> dict[str, dg.MetadataValue]:
    return {f"ollama.{k}": dg.MetadataValue.int(int(v)) for k, v in usage.items()}


def _error(output: dict) -> dict[str, str]:
    return {"error": output["error"]} if output.get("error") else {}


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama", "redis"}, pool=GPU_POOL)
def gpu_warmup(context: dg.AssetExecutionContext, gpu_mutex: GpuMutexResource, ollama: OllamaResource,
               lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """The local model loaded on the GPU for the night (an empty prompt loads it), under the GPU mutex.
    When Ollama or Redis is down the failure is recorded, and the health checks report it."""
    night, store = night_of(context), lease_store.store
    out = gpu_steps.warm_up(gpu_mutex.mutex_for(store), gpu_mutex.timeout_s, ollama.runtime, store.knowledge, night)
    return dg.MaterializeResult(metadata={"night": night, "model": out["model"],
                                          "loaded": ", ".join(out.get("loaded") or []) or "none", **_error(out)})


class HealthConfig(dg.Config):
    require_daemon: bool = True  # no daemon heartbeat is a warning (False: runs outside the daemon are fine)
    disk_min_free_gb: float | None = None  # default: FORGE_NIGHTLY_DISK_MIN_FREE_GB


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "postgres"}, deps=[gpu_warmup])
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
    })


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "ollama"}, deps=[health_checks], pool=GPU_POOL)
def triage(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource, gpu_mutex: GpuMutexResource,
           ollama: OllamaResource) -> dg.MaterializeResult:
    """The night's level from a deterministic rule score: GREEN short-circuits with no model call; only
    the anomalous checks go to the local model (under the GPU mutex) for a threat assessment."""
    night, store = night_of(context), lease_store.store
    checks = [health.CheckResult.from_dict(c) for c in _step(lease_store, night, "health_checks")["checks"]]
    result = gpu_steps.assess(gpu_mutex.mutex_for(store), gpu_mutex.timeout_s, ollama.runtime, store.knowledge,
                              night, checks)
    return dg.MaterializeResult(metadata={
        "night": night, "level": result.level, "score": dg.MetadataValue.int(result.score),
        "anomalies": dg.MetadataValue.int(len(result.anomalies)), "model_called": result.model_called,
        **_usage(result.usage), **_error(result.assessment or {}),
    })


class ResearchConfig(dg.Config):
    feeds: list[str] | None = None  # files or URLs; default: FORGE_NIGHTLY_FEEDS (comma-separated)


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "postgres"}, deps=[triage])
def research_scan(context: dg.AssetExecutionContext, config: ResearchConfig, lease_store: LeaseStoreResource
                  ) -> dg.MaterializeResult:
    """New items from the configured feeds (RSS, Atom or JSON; files or URLs); items seen before are
    left out, and an unreadable feed is reported without stopping the others."""
    night = night_of(context)
    feeds = config.feeds if config.feeds is not None else load_nightly_settings().feed_list
    report = research.scan_feeds(feeds, lease_store.knowledge, night)
    lease_store.knowledge.save_step(night, "research_scan", {"feeds": feeds, **report.to_dict()})
    preview = "\n".join(f"- {i.title}" for i in report.new_items[:10]) or "_nothing new_"
    return dg.MaterializeResult(metadata={
        "night": night, "feeds": dg.MetadataValue.int(len(feeds)),
        "new_items": dg.MetadataValue.int(len(report.new_items)), "seen_before": dg.MetadataValue.int(report.seen),
        "feed_errors": dg.MetadataValue.int(len(report.errors)), "preview": dg.MetadataValue.md(preview),
    })


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "postgres"}, deps=[triage])
def job_outcomes(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """Forge's own work over the window: jobs by outcome, top failure reasons, retries, costs by model
    and batches that ended badly (from the jobs, job_events, costs and batches tables)."""
    night, settings = night_of(context), load_nightly_settings()
    since = datetime.now(UTC) - timedelta(hours=settings.window_h)
    outcomes = lease_store.knowledge.job_outcomes(since)
    lease_store.knowledge.save_step(night, "job_outcomes", outcomes)
    return dg.MaterializeResult(metadata={
        "night": night, "jobs_finished": dg.MetadataValue.int(sum(r["count"] for r in outcomes["by_state"])),
        "cost_usd": dg.MetadataValue.float(sum((c["cost_usd"] for c in outcomes["costs"]), 0.0)),
        "retries": dg.MetadataValue.int(outcomes["retries"]),
    })


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama", "postgres"}, deps=[research_scan, job_outcomes], pool=GPU_POOL)
def knowledge_consolidation(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource,
                            gpu_mutex: GpuMutexResource, ollama: OllamaResource) -> dg.MaterializeResult:
    """The night's findings (triage, research, job outcomes) not yet remembered, summarised by the local
    model under the GPU mutex and stored as searchable memories in one fenced write; a finding the model
    could not summarise is kept with its evidence alone."""
    night, store = night_of(context), lease_store.store
    findings = (consolidation.findings_from_triage(_step(lease_store, night, "triage"))
                + consolidation.findings_from_research(_step(lease_store, night, "research_scan"))
                + consolidation.findings_from_outcomes(_step(lease_store, night, "job_outcomes"), night))
    report = gpu_steps.consolidate(gpu_mutex.mutex_for(store), gpu_mutex.timeout_s, ollama.runtime,
                                   store.knowledge, night, findings)
    return dg.MaterializeResult(metadata={
        "night": night, "findings": dg.MetadataValue.int(report.findings),
        "duplicates": dg.MetadataValue.int(report.duplicates), "stored": dg.MetadataValue.int(len(report.stored)),
        "unsummarised": dg.MetadataValue.int(report.unsummarised), **_usage(report.usage),
        **({"errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in report.errors))} if report.errors else {}),
    })


# What the briefing expects to have run before it; one that did not is named under "What failed".
BEFORE_BRIEFING = [gpu_warmup, health_checks, triage, research_scan, job_outcomes, knowledge_consolidation]


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "slack"}, deps=[knowledge_consolidation])
def morning_briefing(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """The morning briefing (markdown: what ran, what failed, what it cost, what was learned), stored for
    the night and queued once through the outbox for Slack (topic `briefing.ready`). Steps that failed or
    did not run are named under "What failed"."""
    night, repo = night_of(context), lease_store.knowledge
    since = datetime.now(UTC) - timedelta(hours=load_nightly_settings().window_h)
    records = context.instance.get_run_records(filters=dg.RunsFilter(created_after=since), limit=500)
    runs = [{"job": r.dagster_run.job_name, "status": r.dagster_run.status.value, "run_id": r.dagster_run.run_id}
            for r in records if r.dagster_run.run_id != context.run.run_id]
    level, markdown = briefing.render_briefing(night, repo.night_steps(night), runs, repo.memories_of_night(night),
                                               expected=[a.key.to_user_string() for a in BEFORE_BRIEFING])
    queued = briefing.publish_briefing(repo, night, level, markdown)
    return dg.MaterializeResult(metadata={"night": night, "level": level, "queued_for_slack": queued,
                                          "briefing": dg.MetadataValue.md(markdown)})


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama"}, deps=[morning_briefing], pool=GPU_POOL)
def gpu_release(context: dg.AssetExecutionContext, gpu_mutex: GpuMutexResource, ollama: OllamaResource,
                lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """The GPU handed back after the chain: every Ollama model unloaded (`keep_alive: 0`), checked with
    `/api/ps`, so a training job can take it. When this fails the run fails (after the briefing was sent),
    so the healing sensor can act on it."""
    night, store = night_of(context), lease_store.store
    out = gpu_steps.release(gpu_mutex.mutex_for(store), gpu_mutex.timeout_s, ollama.runtime, store.knowledge, night)
    return dg.MaterializeResult(metadata={"night": night, "unloaded": ", ".join(out["unloaded"]) or "none"})


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
        "memories_total": dg.MetadataValue.int(total), **_usage(result["usage"]),
    })


NIGHTLY_CHAIN = [gpu_warmup, health_checks, triage, research_scan, job_outcomes, knowledge_consolidation,
                 morning_briefing, gpu_release]
