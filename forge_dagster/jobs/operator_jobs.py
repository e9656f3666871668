"""An operator's actions in Dagster's launchpad: `retry_jobs` and `cancel_jobs`, configured with ids (Forge
ids or intake ids) or a filter and a reason. Each run records what it changed as metadata; a request the
engine refuses (an unknown id, a job in the wrong state, a retired version, no reason) fails the run with
the reason and changes nothing (core/ops/operator.py)."""

import dagster as dg

from forge_dagster.core.ops.operator import ActionReport, OperatorError, cancel_jobs, retry_jobs
from forge_dagster.core.time_filters import parse_since
from forge_dagster.resources.lease_store import LeaseStoreResource


class RetryJobsConfig(dg.Config):
    """Jobs to retry: `ids`, or `states` (dead, invalid, failed, cancelled) with an optional processor and
    since (an ISO time or an age: 30m, 6h, 2d)."""

    ids: list[str] = []
    states: list[str] = []
    processor: str | None = None
    since: str | None = None
    version: str | None = None
    attempts: int | None = None
    reason: str = ""


class CancelJobsConfig(dg.Config):
    """Open jobs to cancel: `ids`, or a processor (and optionally `states` among the open ones, since)."""

    ids: list[str] = []
    processor: str | None = None
    states: list[str] = []
    since: str | None = None
    reason: str = ""


def _recorded(report: ActionReport) -> dg.Output:
    changed = sorted(report.changed)
    return dg.Output(len(changed), metadata={
        "changed": dg.MetadataValue.int(len(changed)),
        "jobs": dg.MetadataValue.json([{"id": i, "from": report.changed[i]} for i in changed[:500]]),
        "left alone": dg.MetadataValue.json([{"id": i, "why": why} for i, why in report.skipped[:500]]),
    })


def _act(action, store, config, **extra) -> dg.Output:
    try:
        since = parse_since(config.since)
        report = action(store, config.ids or None, states=config.states, processor=config.processor, since=since,
                        reason=config.reason, actor=f"operator:dagster:{extra.pop('run_id')[:8]}", **extra)
    except (OperatorError, ValueError) as exc:
        raise dg.Failure(description=f"nothing changed: {exc}") from None
    return _recorded(report)


@dg.op(out=dg.Out(int, description="jobs retried"))
def retry_selected_jobs(context: dg.OpExecutionContext, config: RetryJobsConfig,
                        lease_store: LeaseStoreResource) -> dg.Output:
    """Send the configured jobs back to pending with a fresh attempt budget."""
    return _act(retry_jobs, lease_store.store, config, version=config.version, attempts=config.attempts,
                run_id=context.run_id)


@dg.op(out=dg.Out(int, description="jobs cancelled"))
def cancel_selected_jobs(context: dg.OpExecutionContext, config: CancelJobsConfig,
                         lease_store: LeaseStoreResource) -> dg.Output:
    """End the configured open jobs as cancelled (a late result is refused)."""
    return _act(cancel_jobs, lease_store.store, config, run_id=context.run_id)


@dg.job(name="retry_jobs", description="Retry jobs that ended without success (ids or a filter, and a reason).",
        tags={"forge/operator": "retry"})
def retry_jobs_job():
    retry_selected_jobs()


@dg.job(name="cancel_jobs", description="Cancel open jobs (ids, or a processor, and a reason).", tags={"forge/operator": "cancel"})
def cancel_jobs_job():
    cancel_selected_jobs()
