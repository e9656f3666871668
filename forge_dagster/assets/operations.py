"""The operator's view in Dagster: ledgers of jobs, batches, costs, credentials (masked), the outbox and
the archive, as asset metadata with asset checks on them.

The ledgers are refreshed by the `operator_view` schedule; `batch_archive` is materialised by the
`archive` schedule, which moves cooled batches out of the hot tables.
"""


import dagster as dg
import pandas as pd

from forge_dagster.constants import OPERATIONS_GROUP
from forge_dagster.core.config import load_settings
from forge_dagster.core.models import JobState
from forge_dagster.core.ops import console_links
from forge_dagster.core.ops.archive import archive_age_hours, archive_cooled
from forge_dagster.core.secrets import mask_secret
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.provider_keys import ProviderKeysResource

DAY_S = 24 * 3600.0


def _table(rows: list[dict], limit: int = 20) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_nothing_")
    return dg.MetadataValue.md(pd.DataFrame(rows).head(limit).to_markdown(index=False))


def _ints(prefix: str, counts: dict[str, int]) -> dict[str, dg.MetadataValue]:
    return {f"{prefix}{k}": dg.MetadataValue.int(int(v)) for k, v in sorted(counts.items())}


@dg.asset(group_name=OPERATIONS_GROUP, kinds={"postgres"})
def job_ledger(lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """Jobs by state (hot and archived) and the latest jobs that ended invalid, failed or dead, with
    their reasons."""
    ops = lease_store.operations
    console = load_settings().console_url
    snap = ops.metrics_snapshot()
    bad, finished = ops.finished_since(DAY_S)
    return dg.MaterializeResult(metadata={
        **_ints("jobs_", {str(s): snap.jobs_by_state.get(str(s), 0) for s in JobState}),
        "jobs_total": dg.MetadataValue.int(sum(snap.jobs_by_state.values())),
        "finished_24h": dg.MetadataValue.int(finished),
        "invalid_or_dead_24h": dg.MetadataValue.int(bad),
        "claims_total": dg.MetadataValue.int(snap.claims),
        "lease_takeovers_total": dg.MetadataValue.int(snap.reclaims + snap.swept),
        "recent_rejections": _table([{**row, "id": f"[{row['id']}]({console_links.job_page(console, row['id'])})"}
                                     for row in ops.recent_rejected_jobs(10)]),
        "console": dg.MetadataValue.url(f"{console}/jobs"),
    })


@dg.asset(group_name=OPERATIONS_GROUP, kinds={"postgres"})
def batch_ledger(lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """Provider batches by state, the ones still open with their age, and provider answers by class."""
    ops = lease_store.operations
    snap = ops.metrics_snapshot()
    oldest = max(snap.oldest_open_batch_s.values(), default=0.0)
    return dg.MaterializeResult(metadata={
        **_ints("batches_", snap.batches_by_state),
        "oldest_open_batch_age_s": dg.MetadataValue.float(round(oldest, 1)),
        "open_batches": _table(ops.open_batches(20)),
        "provider_results": _table([{"provider": p, "outcome": o, "lines": n}
                                    for (p, o), n in sorted(snap.provider_outcomes.items())]),
    })


@dg.asset(group_name=OPERATIONS_GROUP, kinds={"postgres"})
def cost_ledger(lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """Cost booked and tokens billed, by provider and model; the last 24 hours and all time."""
    ops = lease_store.operations
    usage = ops.metrics_snapshot().usage
    metadata = {
        "cost_usd_total": dg.MetadataValue.float(round(sum(u["cost_usd"] for u in usage), 6)),
        "cost_usd_24h": dg.MetadataValue.float(round(ops.cost_since(DAY_S), 6)),
        "by_model": _table([{**u, "cost_usd": round(u["cost_usd"], 6)} for u in usage]),
    }
    for u in usage:  # token usage under provider.* keys, as dagster-openai / dagster-anthropic report it
        for kind in ("input", "output"):
            key = f"{u['provider']}.{kind}_tokens"
            previous = metadata[key].value if key in metadata else 0
            metadata[key] = dg.MetadataValue.int(previous + u[kind])
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name=OPERATIONS_GROUP, kinds={"python"})
def provider_credentials(lease_store: LeaseStoreResource, provider_keys: ProviderKeysResource) -> dg.MaterializeResult:
    """The provider keys in use, masked (never in clear), with their pause state and latest key event."""
    rows = []
    for provider, key, base in (("openai", provider_keys.openai_api_key, provider_keys.openai_base_url),
                                ("anthropic", provider_keys.anthropic_api_key, provider_keys.anthropic_base_url)):
        rows.append({"provider": provider, "alias": "primary" if key else "simulator",
                     "key": mask_secret(key) if key else "(simulator, no key)",
                     "endpoint": base or (provider_keys.simulator_url if not key else "provider default")})
    store = lease_store.store
    try:
        states = {(r["provider"], r["alias"]): r for r in store.keys.all()}
    except Exception:  # a store without the provider_keys table: no states to show
        states = {}
    for row in rows:
        state = states.pop((row["provider"], row["alias"]), None)
        row["state"] = state["state"] if state else "active"
    rows += [{"provider": p, "alias": a, "key": r.get("masked"), "endpoint": "", "state": r.get("state")}
             for (p, a), r in sorted(states.items())]
    events = [{"key": e["key"], "event": e["topic"], "at": str(e["created_at"])[:19]}
              for e in store.operations.latest_key_events()]
    return dg.MaterializeResult(metadata={
        "keys": _table(rows),
        "keys_configured": dg.MetadataValue.int(sum(1 for r in rows if "simulator" not in str(r["key"]))),
        "keys_paused": dg.MetadataValue.int(sum(1 for r in rows if r["state"] == "paused")),
        "latest_key_events": _table(events),
    })


@dg.asset(group_name=OPERATIONS_GROUP, kinds={"postgres"})
def outbox_backlog(lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """What the outbox still has to deliver (notifications, stamps), with attempts and last errors, and the
    stamps the callback policy refused (never sent, for good) with their reasons."""
    outbox = lease_store.outbox
    stats = outbox.stats()
    pending = [{**r, "created_at": str(r["created_at"])[:19], "available_at": str(r["available_at"])[:19]}
               for r in outbox.undelivered(20)]
    refused = [{"job": r["job_id"], "reason": r["reason"], "refused_at": str(r["refused_at"])[:19]}
               for r in outbox.recent_refused(20)]
    return dg.MaterializeResult(metadata={
        "undelivered": dg.MetadataValue.int(stats["undelivered"]),
        "lag_s": dg.MetadataValue.float(round(stats["lag_s"], 1)),
        "retrying": dg.MetadataValue.int(stats["retrying"]),
        "delivered_total": dg.MetadataValue.int(stats["delivered"]),
        "undelivered_rows": _table(pending),
        "callbacks_refused_total": dg.MetadataValue.int(stats["refused"]),
        "refused_callbacks": _table(refused),
    })


class ArchiveConfig(dg.Config):
    older_than_hours: float | None = None  # default: FORGE_ARCHIVE_AFTER_HOURS, else 168 (a week)


@dg.asset(group_name=OPERATIONS_GROUP, kinds={"postgres"})
def batch_archive(config: ArchiveConfig, lease_store: LeaseStoreResource) -> dg.MaterializeResult:
    """Cooled batches with their jobs and result lines, moved out of the hot tables after the configured
    age; still queryable through the `all_jobs` and `all_batches` views."""
    store = lease_store.store
    hours = config.older_than_hours if config.older_than_hours is not None else archive_age_hours()
    moved = archive_cooled(store, older_than_hours=hours)
    totals = store.operations.archive_totals()
    recent = [{**r, "collected_at": str(r["collected_at"])[:19], "archived_at": str(r["archived_at"])[:19]}
              for r in store.operations.recently_archived(10)]
    return dg.MaterializeResult(metadata={
        "older_than_hours": dg.MetadataValue.float(hours),
        "batches_moved": dg.MetadataValue.int(moved.batches),
        "jobs_moved": dg.MetadataValue.int(moved.batch_jobs + moved.unbatched_jobs),
        "result_lines_moved": dg.MetadataValue.int(moved.result_lines),
        "outbox_rows_moved": dg.MetadataValue.int(moved.outbox_rows),
        **_ints("archived_", {k: v for k, v in totals.items() if k != "last_archived_at"}),
        "recently_archived": _table(recent),
    })


@dg.asset_check(asset=outbox_backlog, blocking=False,
                description="The oldest undelivered outbox row is younger than FORGE_OUTBOX_MAX_LAG_S (900 s).")
def outbox_lag_within_limit(lease_store: LeaseStoreResource) -> dg.AssetCheckResult:
    limit = load_settings().outbox_max_lag_s
    stats = lease_store.outbox.stats()
    return dg.AssetCheckResult(passed=stats["lag_s"] <= limit, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"lag_s": round(stats["lag_s"], 1), "limit_s": limit,
                                         "undelivered": stats["undelivered"]})


@dg.asset_check(asset=batch_ledger, blocking=False,
                description="No batch has been open for more than 24 hours (the providers' completion window).")
def no_batch_open_past_a_day(lease_store: LeaseStoreResource) -> dg.AssetCheckResult:
    ages = lease_store.operations.metrics_snapshot().oldest_open_batch_s
    oldest = max(ages.values(), default=0.0)
    return dg.AssetCheckResult(passed=oldest <= DAY_S, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"oldest_open_batch_age_s": round(oldest, 1)})


@dg.asset_check(asset=job_ledger, blocking=False,
                description="At most 10% of the jobs finished in the last 24 hours ended invalid or dead.")
def invalid_or_dead_rate(lease_store: LeaseStoreResource) -> dg.AssetCheckResult:
    bad, finished = lease_store.operations.finished_since(DAY_S)
    rate = bad / finished if finished else 0.0
    return dg.AssetCheckResult(passed=rate <= 0.10, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"invalid_or_dead": bad, "finished": finished, "rate": round(rate, 4)})


@dg.asset_check(asset=provider_credentials, blocking=False,
                description="No provider has every key paused (an outage: its jobs wait).")
def no_provider_outage(lease_store: LeaseStoreResource) -> dg.AssetCheckResult:
    try:
        outages = lease_store.provider_keys.outages()
    except Exception:
        outages = []
    return dg.AssetCheckResult(passed=not outages, severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"providers_out": ", ".join(str(o["provider"]) for o in outages) or "none"})


@dg.asset_check(asset=batch_archive, blocking=False,
                description="No batch is split between the hot and the archive tables.")
def archive_is_whole(lease_store: LeaseStoreResource) -> dg.AssetCheckResult:
    hot_jobs_of_archived, orphans = lease_store.operations.split_batches()
    return dg.AssetCheckResult(passed=hot_jobs_of_archived == 0 and orphans == 0,
                               severity=dg.AssetCheckSeverity.ERROR,
                               metadata={"hot_jobs_of_archived_batches": hot_jobs_of_archived,
                                         "archived_jobs_without_archived_batch": orphans})


OPERATOR_VIEW_ASSETS = [job_ledger, batch_ledger, cost_ledger, provider_credentials, outbox_backlog]
OPERATIONS_CHECKS = [outbox_lag_within_limit, no_batch_open_past_a_day, invalid_or_dead_rate, no_provider_outage,
                     archive_is_whole]
