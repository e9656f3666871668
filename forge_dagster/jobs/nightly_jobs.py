"""The nightly chain's job and schedule, the weekly consolidation schedule, and adapter training.

Schedules read `FORGE_NIGHTLY_CRON` (default 02:00), `FORGE_NIGHTLY_WEEKLY_CRON` (Sundays 04:00) and
`FORGE_NIGHTLY_TIMEZONE` when the definitions load.
"""

import dagster as dg

from forge_dagster.assets.nightly import NIGHT_TAG, NIGHTLY_CHAIN, weekly_memory_digest
from forge_dagster.constants import GPU_POOL, GPU_RUN_TAGS
from forge_dagster.core.config import load_settings
from forge_dagster.core.nightly.adapters import AdapterRegistry, train_adapter
from forge_dagster.core.nightly.settings import load_nightly_settings, night_key
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource

_settings = load_nightly_settings()

nightly_chain_job = dg.define_asset_job(
    "nightly_chain", selection=dg.AssetSelection.assets(*NIGHTLY_CHAIN),
    description="The overnight chain on the local GPU, ending with the morning briefing.", tags=GPU_RUN_TAGS,
)

weekly_consolidation_job = dg.define_asset_job(
    "weekly_consolidation_job", selection=dg.AssetSelection.assets(weekly_memory_digest),
    description="Compress the week's memories into digests.",
)


@dg.schedule(job=nightly_chain_job, cron_schedule=_settings.cron, execution_timezone=_settings.timezone,
             default_status=dg.DefaultScheduleStatus.RUNNING, name="nightly_schedule")
def nightly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """One chain per night; the night (the scheduled date in the configured timezone) is the run key."""
    night = night_key(_settings.timezone, context.scheduled_execution_time)
    return dg.RunRequest(run_key=f"nightly:{night}", tags={NIGHT_TAG: night})


weekly_consolidation = dg.ScheduleDefinition(
    name="weekly_consolidation", job=weekly_consolidation_job, cron_schedule=_settings.weekly_cron,
    execution_timezone=_settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Sundays: fold the week's memories into one digest per source.",
)


class TrainAdapterConfig(dg.Config):
    name: str
    version: str  # semver X.Y.Z
    command: str  # the trainer, run without a shell; `{output}` is the folder it must write the adapter to
    activate: bool = False


@dg.op(pool=GPU_POOL, tags={"kind": "gpu"})
def train_adapter_op(context: dg.OpExecutionContext, config: TrainAdapterConfig, gpu_mutex: GpuMutexResource,
                     ollama: OllamaResource, lease_store: LeaseStoreResource) -> dict:
    """Train a LoRA adapter: hold the GPU mutex, unload every Ollama model, run the trainer (stopped if the
    lock is lost), record the result under the lease's fence, register the new version (and activate it
    if asked)."""
    registry = AdapterRegistry(load_settings().forge_home / "adapters")
    store = lease_store.store
    result = train_adapter(gpu_mutex.mutex_for(store), ollama.runtime, registry, store.knowledge,
                           name=config.name, version=config.version, command=config.command,
                           activate=config.activate, acquire_timeout_s=gpu_mutex.timeout_s)
    context.log.info(f"adapter {config.name} {config.version} trained under fence {result['fence']}")
    return result


@dg.job(name="train_adapter", description="Train and register a LoRA adapter version on the local GPU.",
        tags=GPU_RUN_TAGS)
def train_adapter_job():
    train_adapter_op()
