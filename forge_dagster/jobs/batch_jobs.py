"""Asset jobs of the batch pipeline: building (intake + submission) and collecting one batch."""

import dagster as dg

from forge_dagster.assets.batch_pipeline import (
    job_intake,
    provider_batches,
    provider_results,
    validated_outputs,
)

build_batches_job = dg.define_asset_job(
    "build_batches", selection=dg.AssetSelection.assets(job_intake, provider_batches),
    description="Take in new jobs, shape them into provider batches and submit them.",
)

collect_batch_job = dg.define_asset_job(
    "collect_batch", selection=dg.AssetSelection.assets(provider_results, validated_outputs),
    description="Download one ended batch's results and validate them (fail closed).",
)
