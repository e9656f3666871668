"""Names shared by Dagster definitions: asset groups, pools and run tags."""

INTAKE_GROUP = "intake"
BATCH_GROUP = "batch_pipeline"
NIGHTLY_GROUP = "nightly"
OPERATIONS_GROUP = "operations"
REALTIME_GROUP = "realtime"

OPENAI_POOL = "openai_api"
ANTHROPIC_POOL = "anthropic_api"
GPU_POOL = "ollama_gpu"
# Runs of the GPU jobs (the nightly chain, adapter training) go to a GPU node under Kubernetes' run launcher
# (the `dagster-k8s/config` tag; other launchers ignore it): the label NVIDIA's feature discovery sets,
# and a toleration of the taint GPU nodes usually carry.
GPU_NODE_LABEL = "nvidia.com/gpu.present"
GPU_K8S_CONFIG = {"pod_spec_config": {
    "node_selector": {GPU_NODE_LABEL: "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}}
GPU_RUN_TAGS = {"dagster-k8s/config": GPU_K8S_CONFIG}

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
