"""The nightly chain's review steps over the configured git repositories (FORGE_NIGHTLY_REPOS): code
review, security review and the PR digest. Each is skipped, saying why, when no repository is configured."""

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
from forge_dagster.core.nightly import code_review as review
from forge_dagster.core.nightly import gpu_steps, pr_digest
from forge_dagster.core.nightly import security_review as security
from forge_dagster.core.nightly.gitlog import GitError, changes_since
from forge_dagster.core.nightly.osv import load_advisories
from forge_dagster.core.nightly.settings import load_nightly_settings
from forge_dagster.core.ops.service_checks import error_text
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource

NO_REPOS = "no git repositories configured (FORGE_NIGHTLY_REPOS)"


class ReposConfig(dg.Config):
    repos: list[str] | None = None  # local git repositories; default: FORGE_NIGHTLY_REPOS (comma-separated)


def _repos(config: ReposConfig) -> list[str]:
    return config.repos if config.repos is not None else load_nightly_settings().repo_list


def _changes(repos: list[str], errors: list[str]) -> list:
    settings = load_nightly_settings()
    since = datetime.now(UTC) - timedelta(hours=settings.window_h)
    found = []
    for repo in repos:
        try:
            found += changes_since(repo, since, limit=settings.review_max_changes)
        except GitError as exc:
            errors.append(error_text(exc))
    return found


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"git", "ollama"}, deps=["triage"], pool=GPU_POOL,
          check_specs=step_check("code_review"))
def code_review(context: dg.AssetExecutionContext, config: ReposConfig, lease_store: LeaseStoreResource,
                gpu_mutex: GpuMutexResource, ollama: OllamaResource) -> dg.MaterializeResult:
    """The window's commits of the configured repositories, each diff cut into chunks that fit the model's
    context (FORGE_NIGHTLY_MODEL_CONTEXT_TOKENS) and reviewed by the local model under the GPU mutex: findings
    with file, line, severity and a suggestion."""
    night, store, repos = night_of(context), lease_store.store, _repos(config)
    if not repos:
        return skipped(context, store.knowledge, night, "code_review", NO_REPOS)
    held, errors = pool_held_s(context, "code_review"), []
    changes = _changes(repos, errors)
    tokens = load_nightly_settings().model_context_tokens
    gpu = timed_gpu(gpu_mutex, store)

    def work(lease) -> dict:
        out = review.review_changes(changes, ollama.runtime, context_tokens=tokens)
        return {**out, "repos": repos, "errors": errors + out["errors"]}

    empty = {"repos": repos, "reviews": [], "changes": 0, "findings": 0, "unreviewed_chunks": 0, "errors": errors}
    out = (gpu_steps.model_step(gpu, gpu_mutex.timeout_s, store.knowledge, night, "code_review", work,
                                {**empty, "changes": len(changes)})
           if changes else _save(store.knowledge, night, "code_review", empty))
    return dg.MaterializeResult(metadata={
        "night": night, "changes": dg.MetadataValue.int(out.get("changes", 0)),
        "findings": dg.MetadataValue.int(out.get("findings", 0)), **usage_meta(out.get("usage", {})),
        **tell_waits(context, store.knowledge, night, "code_review", gpu, held), **error_meta(out),
    }, check_results=[check_result(out)])


def _save(repo, night: str, step: str, output: dict) -> dict:
    repo.save_step(night, step, output)
    return output


@dg.asset(group_name=NIGHTLY_GROUP, kinds={"git", "ollama"}, deps=["triage"], pool=GPU_POOL,
          check_specs=step_check("security_review"))
def security_review(context: dg.AssetExecutionContext, config: ReposConfig, lease_store: LeaseStoreResource,
                    gpu_mutex: GpuMutexResource, ollama: OllamaResource) -> dg.MaterializeResult:
    """Deterministic rules first: secrets in the window's diffs, and dependency pins against the advisory
    database (FORGE_NIGHTLY_ADVISORIES, OSV JSON) when configured; only what survives goes to the local
    model (secrets redacted) for a severity and an action."""
    night, store, repos = night_of(context), lease_store.store, _repos(config)
    if not repos:
        return skipped(context, store.knowledge, night, "security_review", NO_REPOS)
    held, errors = pool_held_s(context, "security_review"), []
    source = load_nightly_settings().advisories
    advisories = None
    if source:
        try:
            advisories = load_advisories(source)
        except Exception as exc:  # noqa: BLE001 - the secrets are still checked; the briefing says why not pins
            errors.append(f"advisories {source}: {error_text(exc)}")
    rules = {**security.rule_findings(_changes(repos, errors), repos, advisories), "errors": errors}
    gpu = timed_gpu(gpu_mutex, store)
    if rules["findings"]:
        out = gpu_steps.model_step(gpu, gpu_mutex.timeout_s, store.knowledge, night, "security_review",
                                   lambda lease: {**(a := security.assess(rules, ollama.runtime)),
                                                  "errors": errors + a["errors"]}, rules)
    else:
        out = _save(store.knowledge, night, "security_review", rules)
    return dg.MaterializeResult(metadata={
        "night": night, "secrets": dg.MetadataValue.int(len(out["secrets"])),
        "vulnerable_pins": dg.MetadataValue.int(len(out["vulnerable_pins"])),
        "dropped_by_rules": dg.MetadataValue.int(out["dropped"]), **usage_meta(out.get("usage", {})),
        **tell_waits(context, store.knowledge, night, "security_review", gpu, held), **error_meta(out),
    }, check_results=[check_result(out)])


@dg.asset(name="pr_digest", group_name=NIGHTLY_GROUP, kinds={"git", "ollama"}, deps=["triage"], pool=GPU_POOL,
          check_specs=step_check("pr_digest"))
def pr_digest_summary(context: dg.AssetExecutionContext, config: ReposConfig, lease_store: LeaseStoreResource,
                      gpu_mutex: GpuMutexResource, ollama: OllamaResource) -> dg.MaterializeResult:
    """Branches of the configured repositories merged in the window and still open, summarised per
    repository by the local model under the GPU mutex."""
    night, store, repos = night_of(context), lease_store.store, _repos(config)
    if not repos:
        return skipped(context, store.knowledge, night, "pr_digest", NO_REPOS)
    held = pool_held_s(context, "pr_digest")
    since = datetime.now(UTC) - timedelta(hours=load_nightly_settings().window_h)
    collected = pr_digest.collect(repos, since)
    gpu = timed_gpu(gpu_mutex, store)
    if collected["merged"] or collected["open"]:
        out = gpu_steps.model_step(gpu, gpu_mutex.timeout_s, store.knowledge, night, "pr_digest",
                                   lambda lease: pr_digest.summarise(collected, ollama.runtime), collected)
    else:
        out = _save(store.knowledge, night, "pr_digest", collected)
    return dg.MaterializeResult(metadata={
        "night": night, "merged": dg.MetadataValue.int(out["merged"]), "open": dg.MetadataValue.int(out["open"]),
        **usage_meta(out.get("usage", {})), **tell_waits(context, store.knowledge, night, "pr_digest", gpu, held),
        **error_meta(out),
    }, check_results=[check_result(out)])
