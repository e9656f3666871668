"""Realtime outputs: realtime jobs run through the provider ports on asyncio, within every key's limits.

One asset and its job; the realtime sensor asks for a run when realtime jobs are claimable and no
realtime run is in flight. No `pool=`: one run serves both providers (a run cannot hold one provider's
pool alone), and the shared capacity, each key's requests and tokens per minute, is already shared per
call: every worker (this run, `forge work --realtime` processes) paces on the key's schedule in the store.
A pool slot held for a whole run would only keep the batch pipeline's calls waiting behind it.
"""

import dagster as dg

from forge_dagster.constants import LEASED_RUN_TAGS, REALTIME_GROUP
from forge_dagster.core.realtime.executor import RealtimeConfig, RealtimeExecutor
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
from forge_dagster.resources.provider_keys import ProviderKeysResource


class RealtimeRunConfig(dg.Config):
    concurrency: int = 64
    max_jobs: int = 5000  # per run; the sensor asks again while work remains


@dg.asset(group_name=REALTIME_GROUP, kinds={"python", "postgres"})
def realtime_outputs(
    context: dg.AssetExecutionContext, config: RealtimeRunConfig, lease_store: LeaseStoreResource,
    processors: ProcessorCatalogResource, provider_keys: ProviderKeysResource,
) -> dg.MaterializeResult:
    """Realtime jobs run to the end: claimed from the lease store, called concurrently within each
    provider key's rate limits, and accepted only after validating against the processor's schema
    (fail closed). Jobs whose keys are all paused wait in the queue; none fail for it."""
    store = lease_store.store
    executor = RealtimeExecutor(store, processors.load(store), provider_keys.ring(),
                                RealtimeConfig(concurrency=config.concurrency))
    stats = executor.run_sync(until_drained=True, max_jobs=config.max_jobs)
    if stats.lease_lost:
        context.log.warning(f"{stats.lease_lost} late results rejected: their leases were taken over")
    if stats.budget_held:
        context.log.warning(f"{stats.budget_held} jobs wait: a daily budget would be exceeded")
    return dg.MaterializeResult(metadata={
        **{name: dg.MetadataValue.int(getattr(stats, name)) for name in (
            "claimed", "succeeded", "invalid", "failed", "retried", "dead", "released", "lease_lost",
            "budget_held", "calls", "rate_limited", "call_retries", "repairs", "keys_paused")},
        "cost_usd": dg.MetadataValue.float(round(stats.cost_usd, 6)),
        **{f"{provider}.{kind}": dg.MetadataValue.int(int(n))  # as dagster-openai / dagster-anthropic
           for provider, usage in sorted(stats.usage.items()) for kind, n in sorted(usage.items())},
    })


realtime_job = dg.define_asset_job(
    "run_realtime", selection=dg.AssetSelection.assets(realtime_outputs), tags=LEASED_RUN_TAGS,
    description="Run the realtime jobs that are claimable now.",
)
