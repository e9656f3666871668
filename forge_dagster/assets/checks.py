"""Quality rules on validated outputs, as asset checks: what acceptance must leave behind, checked again
after every collection, so a settling bug, an unpriced model or an output changed after the fact shows."""

import dagster as dg

from forge_dagster.assets.batch_pipeline import validated_outputs
from forge_dagster.core.platform.validation import schema_errors
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource

RECENT = 1000  # succeeded jobs each check looks at, newest first


def _examples(problems: list[str]) -> str:
    return "\n".join(problems[:5]) or "none"


@dg.asset_check(asset=validated_outputs, blocking=False,
                description="Every recently succeeded batch job has its validated output stored and, when its "
                            "result used tokens, the cost of that attempt booked in the ledger.")
def succeeded_jobs_have_output_and_cost(lease_store: LeaseStoreResource):
    missing = lease_store.batches.succeeded_without_output_or_cost(RECENT)
    return dg.AssetCheckResult(
        passed=not missing, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failing": len(missing), "examples": _examples([f"job {i}: {why}" for i, why in missing])})


@dg.asset_check(asset=validated_outputs, blocking=False,
                description="Every recently succeeded output, as stored now, validates against the response "
                            "schema pinned in the processor registry for its version.")
def succeeded_outputs_validate(lease_store: LeaseStoreResource, processors: ProcessorCatalogResource):
    catalog = processors.load(lease_store.store)
    bad = []
    rows = lease_store.jobs.recent_succeeded(RECENT)
    for job_id, name, version, output in rows:
        try:
            errors = schema_errors(catalog.get_version(name, version), output)
        except KeyError:
            errors = [f"processor {name} {version} is not in the registry"]
        if errors:
            bad.append(f"job {job_id}: {errors[0]}")
    return dg.AssetCheckResult(
        passed=not bad, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"checked": len(rows), "failing": len(bad), "examples": _examples(bad)})


@dg.asset_check(asset=validated_outputs, blocking=False,
                description="No job is left in flight inside a batch that was already collected.")
def no_stranded_jobs(lease_store: LeaseStoreResource):
    stranded = lease_store.jobs.stranded_count()
    return dg.AssetCheckResult(passed=stranded == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"stranded_jobs": stranded})


BATCH_OUTPUT_CHECKS = [succeeded_jobs_have_output_and_cost, succeeded_outputs_validate, no_stranded_jobs]
