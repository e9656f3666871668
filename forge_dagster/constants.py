"""Names shared by Dagster definitions: asset groups, pools and run tags."""

INTAKE_GROUP = "intake"
BATCH_GROUP = "batch_pipeline"
NIGHTLY_GROUP = "nightly"
OPERATIONS_GROUP = "operations"
REALTIME_GROUP = "realtime"

OPENAI_POOL = "openai_api"
ANTHROPIC_POOL = "anthropic_api"
GPU_POOL = "ollama_gpu"

# Runs of jobs tagged so hold a lease in the store while their steps work (core/ops/run_leases.py); a run
# found dead gets the second tag, with the reason, when it is reported failed.
RUN_LEASE_TAG = "forge/run_lease"
DEAD_RUN_TAG = "forge/dead_run"
# The store schema a sensor asked for the run from: one Dagster storage may serve several Forge stores.
STORE_TAG = "forge/store"
# The tags of every leased job: the lease, a runtime limit for a run whose process lives but no longer
# progresses (its lease stays alive), and no daemon run retries (the work sensors ask again instead).
RUN_MAX_RUNTIME_S = 3600
LEASED_RUN_TAGS = {RUN_LEASE_TAG: "true", "dagster/max_runtime": str(RUN_MAX_RUNTIME_S), "dagster/max_retries": "0"}
