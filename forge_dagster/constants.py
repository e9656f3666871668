"""Names shared by Dagster definitions: asset groups and pools."""

INTAKE_GROUP = "intake"
BATCH_GROUP = "batch_pipeline"
NIGHTLY_GROUP = "nightly"
OPERATIONS_GROUP = "operations"
REALTIME_GROUP = "realtime"

OPENAI_POOL = "openai_api"
ANTHROPIC_POOL = "anthropic_api"
GPU_POOL = "ollama_gpu"
