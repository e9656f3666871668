"""Forge's Dagster definitions: resources, assets, checks, sensors and jobs."""

from __future__ import annotations

import dagster as dg
from pydantic import SecretStr

from forge_dagster.assets.batch_pipeline import (
    job_intake,
    provider_batches,
    provider_results,
    validated_outputs,
)
from forge_dagster.assets.checks import BATCH_OUTPUT_CHECKS
from forge_dagster.assets.costs import cost_report
from forge_dagster.assets.nightly import NIGHTLY_CHAIN, weekly_memory_digest
from forge_dagster.assets.operations import OPERATIONS_CHECKS, OPERATOR_VIEW_ASSETS, batch_archive
from forge_dagster.assets.realtime import realtime_job, realtime_outputs
from forge_dagster.core.config import ForgeSettings, load_settings
from forge_dagster.core.nightly.settings import load_nightly_settings
from forge_dagster.core.providers.keyring import DEFAULT_SIMULATOR_URL
from forge_dagster.jobs.archive_jobs import (
    archive_job,
    archive_schedule,
    operator_view_job,
    operator_view_schedule,
)
from forge_dagster.jobs.batch_jobs import build_batches_job, collect_batch_job
from forge_dagster.jobs.batch_operator_jobs import cancel_batch_job
from forge_dagster.jobs.nightly_jobs import (
    nightly_chain_job,
    nightly_schedule,
    train_adapter_job,
    weekly_consolidation,
    weekly_consolidation_job,
)
from forge_dagster.jobs.operator_jobs import cancel_jobs_job, retry_jobs_job
from forge_dagster.resources.gpu import GpuMutexResource
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.ollama import OllamaResource
from forge_dagster.resources.outbox_relay import OutboxRelayResource
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
from forge_dagster.resources.provider_keys import ProviderKeysResource
from forge_dagster.sensors.batch_sensors import batch_status_sensor, pending_work_sensor
from forge_dagster.sensors.healing import healing_sensor
from forge_dagster.sensors.lease_recovery import lease_recovery_sensor
from forge_dagster.sensors.outbox_relay import outbox_relay_sensor
from forge_dagster.sensors.quota_sensors import key_probe_sensor
from forge_dagster.sensors.realtime_sensors import realtime_work_sensor
from forge_dagster.sensors.run_liveness import run_liveness_sensor


def default_resources(settings: ForgeSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources from the settings: secrets as `dg.EnvVar` (named, never copied); no key means the simulator."""
    settings = settings or load_settings()

    def secret(name: str, value: SecretStr | str | None) -> dg.EnvVar | None:
        given = value.get_secret_value() if isinstance(value, SecretStr) else value
        return dg.EnvVar(name) if given else None

    return {
        "lease_store": LeaseStoreResource(),
        "processors": ProcessorCatalogResource(),
        "provider_keys": ProviderKeysResource(
            openai_api_key=secret("OPENAI_API_KEY", settings.openai_api_key),
            anthropic_api_key=secret("ANTHROPIC_API_KEY", settings.anthropic_api_key),
            openai_base_url=settings.openai_base_url, anthropic_base_url=settings.anthropic_base_url,
            simulator_url=settings.simulator_url or DEFAULT_SIMULATOR_URL,
        ),
        "outbox_relay": OutboxRelayResource(
            slack_webhook_url=secret("FORGE_SLACK_WEBHOOK_URL", settings.slack_webhook_url),
            callback_secret=secret("FORGE_CALLBACK_SECRET", settings.callback_secret),
            simulator_url=settings.simulator_url, callback_allow=settings.callback_allow or None,
            callback_https_only=settings.callback_https_only,
        ),
        "gpu_mutex": GpuMutexResource(redis_url=secret("FORGE_REDIS_URL", settings.redis_url)),
        "ollama": OllamaResource(host=settings.ollama_host, model=load_nightly_settings().model),
    }


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The definitions, with `resources` replacing the defaults (tests and the demo pass their own)."""
    return dg.Definitions(
        assets=[job_intake, provider_batches, provider_results, validated_outputs, *OPERATOR_VIEW_ASSETS, batch_archive,
                *NIGHTLY_CHAIN, weekly_memory_digest, realtime_outputs, cost_report],
        asset_checks=[*BATCH_OUTPUT_CHECKS, *OPERATIONS_CHECKS],
        jobs=[build_batches_job, collect_batch_job, archive_job, operator_view_job, nightly_chain_job,
              weekly_consolidation_job, train_adapter_job, realtime_job, retry_jobs_job, cancel_jobs_job,
              cancel_batch_job],
        schedules=[archive_schedule, operator_view_schedule, nightly_schedule, weekly_consolidation],
        sensors=[pending_work_sensor, batch_status_sensor, lease_recovery_sensor, outbox_relay_sensor,
                 healing_sensor, realtime_work_sensor, key_probe_sensor, run_liveness_sensor],
        resources={**default_resources(), **(resources or {})},
    )


defs = build_definitions()
