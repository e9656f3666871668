"""The batch pipeline: job_intake -> provider_batches -> provider_results -> validated_outputs.

Each asset reads its context, calls one engine function and reports counts, a preview and token usage.
Polling never happens here: the batch status sensor finds ended batches and asks for their partition.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from forge_dagster.constants import BATCH_GROUP, INTAKE_GROUP
from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import collect_results, validate_batch
from forge_dagster.core.config import load_settings
from forge_dagster.core.intake.inbox import drain_inbox
from forge_dagster.core.intake.routing import review_external_rows
from forge_dagster.core.ops import console_links
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
from forge_dagster.resources.provider_keys import ProviderKeysResource

batch_partitions = dg.DynamicPartitionsDefinition(name="provider_batch")


def batch_partition_key(batch_id: int) -> str:
    return f"b{batch_id}"


def batch_id_from_key(key: str) -> int:
    return int(key.removeprefix("b"))


def _md_table(rows: list[dict]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_nothing_")
    return dg.MetadataValue.md(pd.DataFrame(rows).head(10).to_markdown(index=False))


def _usage_metadata(provider: str, usage: dict[str, int]) -> dict[str, dg.MetadataValue]:
    return {f"{provider}.{k}": dg.MetadataValue.int(int(v)) for k, v in usage.items()}


def default_inbox() -> Path:
    """The inbox the pending-work sensor watches and intake drains: $FORGE_HOME/inbox."""
    return load_settings().forge_home / "inbox"


class IntakeConfig(dg.Config):
    inbox: str | None = None  # default: default_inbox(); the sensor's runs name the folder it watched


@dg.asset(group_name=INTAKE_GROUP, kinds={"python", "postgres"})
def job_intake(
    context: dg.AssetExecutionContext, config: IntakeConfig, lease_store: LeaseStoreResource,
    processors: ProcessorCatalogResource,
) -> dg.MaterializeResult:
    """New jobs: JSONL files dropped in the inbox, and rows other applications inserted, each checked
    against its processor. A bad line or row is refused with its reason; the rest are enqueued. An inbox
    entry that cannot be read is moved to `refused/` with a report naming the problem."""
    inbox = Path(config.inbox) if config.inbox else default_inbox()
    catalog = processors.load(lease_store.store)
    files = drain_inbox(lease_store.store, catalog, inbox)
    for problem in files.problems:
        context.log.warning(f"inbox entry {problem['file']}: {problem['problem']}")
    external_ok, external_refused = review_external_rows(lease_store.store, catalog)
    return dg.MaterializeResult(metadata={
        "files": dg.MetadataValue.int(files.files),
        "accepted": dg.MetadataValue.int(files.accepted + external_ok),
        "rejected": dg.MetadataValue.int(len(files.rejected) + external_refused),
        "rejected_preview": _md_table(files.rejected),
        "inbox_problems": dg.MetadataValue.int(len(files.problems)),
        "inbox_problems_preview": _md_table(files.problems),
    })


class BuilderConfig(dg.Config):
    claim_limit: int = 5000
    max_requests_per_batch: int | None = None


@dg.asset(group_name=BATCH_GROUP, kinds={"python", "postgres"}, deps=[job_intake])
def provider_batches(
    context: dg.AssetExecutionContext, config: BuilderConfig, lease_store: LeaseStoreResource,
    processors: ProcessorCatalogResource, provider_keys: ProviderKeysResource,
) -> dg.MaterializeResult:
    """Provider batches built from pending jobs: grouped by provider, model and processor version,
    shaped within the provider's limits, and submitted (the intent is stored before each call)."""
    report = build_and_submit(lease_store.store, processors.load(lease_store.store), provider_keys.ports,
                              claim_limit=config.claim_limit, max_requests_per_batch=config.max_requests_per_batch)
    for error in report.errors:
        context.log.warning(error)
    return dg.MaterializeResult(metadata={
        "claimed": dg.MetadataValue.int(report.claimed),
        "batches_submitted": dg.MetadataValue.int(len(report.batches)),
        "jobs_submitted": dg.MetadataValue.int(report.submitted_jobs),
        "jobs_failed": dg.MetadataValue.int(report.failed_jobs),
        "jobs_requeued": dg.MetadataValue.int(report.requeued_jobs),
        "jobs_waiting_on_budget": dg.MetadataValue.int(report.budget_held),
        "resumed_submissions": dg.MetadataValue.int(report.resumed),
        "batches": _md_table([{"batch": batch_partition_key(b)} for b in report.batches]),
    })


@dg.asset(group_name=BATCH_GROUP, kinds={"python", "postgres"}, partitions_def=batch_partitions,
          deps=[provider_batches])
def provider_results(
    context: dg.AssetExecutionContext, lease_store: LeaseStoreResource, provider_keys: ProviderKeysResource,
) -> dg.MaterializeResult:
    """Every result line of one ended provider batch (output and error files, or the results stream),
    stored as received and matched to its job by custom_id."""
    batch_id = batch_id_from_key(context.partition_key)
    store = lease_store.store
    report = collect_results(store, provider_keys.ports, batch_id)
    batch = store.batches.get(batch_id)
    return dg.MaterializeResult(metadata={
        "console": dg.MetadataValue.url(console_links.batch_page(load_settings().console_url, batch_id)),
        "batch_state": dg.MetadataValue.text(batch["state"]),
        "lines": dg.MetadataValue.int(report.lines),
        "stored_now": dg.MetadataValue.int(report.stored_now),
        "by_outcome": _md_table([{"outcome": k, "lines": v} for k, v in sorted(report.by_outcome.items())]),
        **_usage_metadata(batch["provider"], report.usage),
    })


@dg.asset(group_name=BATCH_GROUP, kinds={"python", "postgres"}, partitions_def=batch_partitions,
          deps=[provider_results])
def validated_outputs(
    context: dg.AssetExecutionContext, lease_store: LeaseStoreResource, processors: ProcessorCatalogResource,
) -> dg.MaterializeResult:
    """Outputs accepted only after they validate against the processor's JSON Schema (fail closed);
    the rest are invalid, failed, or requeued for another attempt. Cost is booked once per attempt."""
    batch_id = batch_id_from_key(context.partition_key)
    store = lease_store.store
    report = validate_batch(store, processors.load(store), batch_id)
    batch = store.batches.get(batch_id)
    return dg.MaterializeResult(metadata={
        "console": dg.MetadataValue.url(console_links.batch_page(load_settings().console_url, batch_id)),
        **{f"jobs_{state}": dg.MetadataValue.int(n) for state, n in sorted(report.by_state.items())},
        "cost_usd": dg.MetadataValue.float(round(report.cost_usd, 6)),
        "rejections": _md_table([{"reason": k, "jobs": v} for k, v in sorted(report.reasons.items())]),
        "rejected_samples": _md_table(report.samples),
        "preview": _md_table(report.accepted_preview),
        "batch_state": dg.MetadataValue.text(batch["state"]),
        **_usage_metadata(batch["provider"], report.usage),
    })
