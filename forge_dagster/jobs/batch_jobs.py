"""Asset jobs of the batch pipeline: building (intake + submission) and collecting one batch.

Their runs hold a lease in the store while their steps work (`forge/run_lease`), so a run whose processes
died is found by its lease, reported failed and its work asked for again by the batch sensors, under a new
run key. Those sensors are the one road by which the work is asked again, so the daemon's run retries are
off for these jobs (`dagster/max_retries` 0). Which limit catches what:
- the run lease (FORGE_RUN_LEASE_TTL_S, 30 s): a started run with no live process (run worker and steps
  killed, host lost), reported failed about one TTL after its last heartbeat, by any run launcher;
- FORGE_RUN_START_TIMEOUT_S (120 s): a started run that never took its lease (its worker died before
  its first step);
- `run_monitoring.start_timeout_seconds` in dagster.yaml (180 s): a run that never got to STARTED (the
  launcher or the daemon died while launching it);
- `dagster/max_runtime` (1 hour): a run whose process lives but no longer progresses (a hung call, a
  deadlock): its heartbeat thread keeps its lease alive, so only the runtime limit ends it.
"""

import dagster as dg

from forge_dagster.assets.batch_pipeline import (
    job_intake,
    provider_batches,
    provider_results,
    validated_outputs,
)
from forge_dagster.constants import LEASED_RUN_TAGS

build_batches_job = dg.define_asset_job(
    "build_batches", selection=dg.AssetSelection.assets(job_intake, provider_batches), tags=LEASED_RUN_TAGS,
    description="Take in new jobs, shape them into provider batches and submit them.",
)

collect_batch_job = dg.define_asset_job(
    "collect_batch", selection=dg.AssetSelection.assets(provider_results, validated_outputs), tags=LEASED_RUN_TAGS,
    description="Download one ended batch's results and validate them (fail closed).",
)
