"""An operator's cancel of a provider batch in Dagster's launchpad: `cancel_batch`, configured with the
batch (Forge's id, its fb_ id or the provider's batch id), what happens to the jobs the provider did not
finish (`then`: requeue or cancel) and a reason. The run records what it changed as metadata; a request the
engine refuses (an unknown batch, one already ended or collected, no reason) fails the run with the reason
and changes nothing (core/batch/cancel.py)."""

import dagster as dg

from forge_dagster.core.batch.cancel import DEFAULT_WAIT_S, cancel_batch
from forge_dagster.core.ops.operator import OperatorError
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
from forge_dagster.resources.provider_keys import ProviderKeysResource


class CancelBatchConfig(dg.Config):
    """The batch to cancel and what becomes of the jobs the provider did not finish."""

    batch: str  # Forge's batch id, its forge batch id (fb_...) or the provider's batch id
    then: str = "requeue"  # requeue (pending, attempt given back) or cancel (they end cancelled)
    reason: str = ""
    wait_s: float = DEFAULT_WAIT_S  # how long to wait for the provider to end the batch


@dg.op(out=dg.Out(int, description="jobs the cancel settled"))
def cancel_provider_batch(context: dg.OpExecutionContext, config: CancelBatchConfig, lease_store: LeaseStoreResource,
                          processors: ProcessorCatalogResource, provider_keys: ProviderKeysResource) -> dg.Output:
    """Ask the provider to cancel the batch, harvest and validate what finished, settle the rest per `then`."""
    store = lease_store.store
    try:
        report = cancel_batch(store, processors.load(store), provider_keys.ports, config.batch, then=config.then,
                              reason=config.reason, actor=f"operator:dagster:{context.run_id[:8]}",
                              wait_s=config.wait_s)
    except OperatorError as exc:
        raise dg.Failure(description=f"nothing changed: {exc}") from None
    if not report.ended:
        context.log.warning(f"the provider was still {report.provider_state} after {config.wait_s:.0f} s: "
                            "the pipeline collects the batch when it ends")
    changed = sorted(report.changed.items())
    return dg.Output(len(changed), metadata={
        "batch_id": dg.MetadataValue.int(report.batch_id),
        "provider_batch_id": dg.MetadataValue.text(report.provider_batch_id),
        "provider_state": dg.MetadataValue.text(report.provider_state),
        "then": dg.MetadataValue.text(report.then),
        "changed": dg.MetadataValue.int(len(changed)),
        "jobs_by_state": dg.MetadataValue.json(report.by_state()),
        "jobs": dg.MetadataValue.json([{"id": i, "state": s} for i, s in changed[:500]]),
        "left alone": dg.MetadataValue.json([{"id": i, "why": why} for i, why in report.skipped[:500]]),
        "cost_usd": dg.MetadataValue.float(round(report.cost_usd, 6)),
        "operator_action": dg.MetadataValue.int(report.action_id or 0),
    })


@dg.job(name="cancel_batch", tags={"forge/operator": "cancel_batch"},
        description="Cancel a provider batch: harvest what finished, requeue or cancel the rest (and a reason).")
def cancel_batch_job():
    cancel_provider_batch()
