"""The nightly chain's research steps: the research scout (arXiv's Atom API), the article scanner (feeds;
the examples that ship with Forge when none are configured) and the ecosystem watch (PyPI's JSON API)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from forge_dagster.assets.nightly_support import (
    check_result,
    error_meta,
    night_of,
    pool_held_s,
    skipped,
    step_check,
    tell_waits,
    timed_gpu,
    usage_meta,
)
from forge_dagster.constants import GPU_POOL, NIGHTLY_GROUP
from forge_dagster.core.nightly import arxiv, ecosystem, gpu_steps, research
from forge_dagster.core.nightly.dependencies import project_dependencies
from forge_dagster.core.nightly.settings import load_nightly_settings
from forge_dagster.core.ops.service_checks import error_text
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"ollama", "postgres"}, deps=["triage"], pool=GPU_POOL,
          check_specs=step_check("research_scout"))
def research_scout(context: dg.AssetExecutionContext, lease_store: LeaseStoreResource, gpu_mutex: GpuMutexResource,
                   ollama: OllamaResource) -> dg.MaterializeResult:
    """New papers from arXiv's API for FORGE_NIGHTLY_ARXIV_CATEGORIES and _KEYWORDS, scored by a
    deterministic rule; the top FORGE_NIGHTLY_ARXIV_TOP_N not seen before are summarised by the local model."""
    night, store, s = night_of(context), lease_store.store, load_nightly_settings()
    if not s.arxiv_category_list:
        return skipped(context, store.knowledge, night, "research_scout",
                       "no arXiv categories configured (FORGE_NIGHTLY_ARXIV_CATEGORIES)")
    held = pool_held_s(context, "research_scout")
    url = arxiv.query_url(s.arxiv_url, s.arxiv_category_list, s.arxiv_keyword_list, s.arxiv_max_results)
    gpu = timed_gpu(gpu_mutex, store)
    try:
        papers = arxiv.parse_papers(research.read_feed(url))
    except Exception as exc:  # noqa: BLE001 - recorded; the step's check and the briefing report it
        out = {"query": url, "papers": [], "error": error_text(exc)}
        store.knowledge.save_step(night, "research_scout", out)
    else:
        ranked = arxiv.rank(papers, s.arxiv_category_list, s.arxiv_keyword_list, datetime.now(UTC))
        new = store.knowledge.record_research_items(
            [{"feed": arxiv.FEED, "item_id": p.id, "title": p.title, "link": p.link, "published": p.published,
              "summary": p.abstract[:500]} for p in ranked], night)
        top = [p for p in ranked if (arxiv.FEED, p.id) in new][: s.arxiv_top_n]
        base = {"query": url, "fetched": len(papers), "seen_before": len(papers) - len(new)}
        if top:
            out = gpu_steps.model_step(gpu, gpu_mutex.timeout_s, store.knowledge, night, "research_scout",
                                       lambda lease: {**base, **arxiv.summarise(top, ollama.runtime)},
                                       {**base, "papers": [p.to_dict() for p in top]})
        else:
            out = {**base, "papers": []}
            store.knowledge.save_step(night, "research_scout", out)
    return dg.MaterializeResult(metadata={
        "night": night, "papers": dg.MetadataValue.int(len(out["papers"])),
        "top": dg.MetadataValue.md("\n".join(f"- ({p['score']:g}) {p['title']}" for p in out["papers"]) or "_none_"),
        **usage_meta(out.get("usage", {})), **tell_waits(context, store.knowledge, night, "research_scout", gpu, held),
        **error_meta(out),
    }, check_results=[check_result(out)])


class ResearchConfig(dg.Config):
    feeds: list[str] | None = None  # files or URLs; default: FORGE_NIGHTLY_FEEDS, else the shipped examples


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "postgres"}, deps=["triage"],
          check_specs=step_check("research_scan"))
def research_scan(context: dg.AssetExecutionContext, config: ResearchConfig, lease_store: LeaseStoreResource
                  ) -> dg.MaterializeResult:
    """The article scanner: new items from the configured feeds (RSS, Atom or JSON; files or URLs), or the
    example feeds that ship with Forge when none are configured; items seen before are left out, and an
    unreadable feed is reported without stopping the others."""
    night = night_of(context)
    feeds = config.feeds if config.feeds is not None else (load_nightly_settings().feed_list
                                                           or research.example_feeds())
    report = research.scan_feeds(feeds, lease_store.knowledge, night)
    lease_store.knowledge.save_step(night, "research_scan", {"feeds": feeds, **report.to_dict()})
    preview = "\n".join(f"- {i.title}" for i in report.new_items[:10]) or "_nothing new_"
    return dg.MaterializeResult(metadata={
        "night": night, "feeds": dg.MetadataValue.int(len(feeds)),
        "new_items": dg.MetadataValue.int(len(report.new_items)), "seen_before": dg.MetadataValue.int(report.seen),
        "feed_errors": dg.MetadataValue.int(len(report.errors)), "preview": dg.MetadataValue.md(preview),
    }, check_results=[check_result()])


class EcosystemConfig(dg.Config):
    projects: list[str] | None = None  # pyproject.toml / requirements files or folders; default FORGE_NIGHTLY_PROJECTS


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"python", "pypi"}, deps=["triage"],
          check_specs=step_check("ecosystem_watch"))
def ecosystem_watch(context: dg.AssetExecutionContext, config: EcosystemConfig, lease_store: LeaseStoreResource
                    ) -> dg.MaterializeResult:
    """The configured projects' dependencies against PyPI's JSON API (FORGE_NIGHTLY_PYPI_URL): pins that
    were yanked, and new releases with what changed."""
    night, repo, s = night_of(context), lease_store.knowledge, load_nightly_settings()
    projects = config.projects if config.projects is not None else s.project_list
    if not projects:
        return skipped(context, repo, night, "ecosystem_watch", "no projects configured (FORGE_NIGHTLY_PROJECTS)")
    deps, errors = [], {}
    for project in projects:
        try:
            deps += project_dependencies(project)
        except Exception as exc:  # noqa: BLE001 - one unreadable project is reported, the others watched
            errors[project] = error_text(exc)
    out = ecosystem.watch(deps, s.pypi_url, datetime.now(UTC) - timedelta(hours=s.window_h))
    out = {**out, "projects": projects, "errors": {**errors, **out["errors"]}}
    repo.save_step(night, "ecosystem_watch", out)
    return dg.MaterializeResult(metadata={
        "night": night, "dependencies": dg.MetadataValue.int(out["checked"]),
        "updates": dg.MetadataValue.int(len(out["updates"])), "yanked": dg.MetadataValue.int(out["yanked"]),
        "errors": dg.MetadataValue.int(len(out["errors"])),
    }, check_results=[check_result(out)])
