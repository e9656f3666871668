"""Quality rules on validated outputs, as asset checks."""


import dagster as dg

from forge_dagster.assets.batch_pipeline import validated_outputs
from forge_dagster.core.validation import schema_errors
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.providers import ProcessorCatalogResource


@dg.asset_check(asset=validated_outputs, blocking=False,
                description="Every recently succeeded output still validates against its pinned processor schema.")
def succeeded_outputs_validate(lease_store: LeaseStoreResource, processors: ProcessorCatalogResource):
    catalog = processors.load(lease_store.store)
    bad = []
    rows = lease_store.store.recent_succeeded(1000)
    for job_id, name, version, output in rows:
        try:
            errors = schema_errors(catalog.get_version(name, version), output)
        except KeyError:
            errors = [f"processor {name} {version} no longer defined"]
        if errors:
            bad.append(f"job {job_id}: {errors[0]}")
    return dg.AssetCheckResult(
        passed=not bad, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"checked": len(rows), "failing": len(bad), "examples": "\n".join(bad[:5]) or "none"})


@dg.asset_check(asset=validated_outputs, blocking=False,
                description="No job is left in flight inside a batch that was already collected.")
def no_stranded_jobs(lease_store: LeaseStoreResource):
    stranded = lease_store.store.stranded_count()
    return dg.AssetCheckResult(passed=stranded == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"stranded_jobs": stranded})
