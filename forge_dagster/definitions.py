"""Forge's Dagster definitions: resources, assets, checks, sensors and jobs."""

from __future__ import annotations

import dagster as dg

from forge_dagster.assets.batch_pipeline import (
    job_intake,
    provider_batches,
    provider_results,
    validated_outputs,
)
from forge_dagster.assets.checks import no_stranded_jobs, succeeded_outputs_validate
from forge_dagster.jobs.batch_jobs import build_batches_job, collect_batch_job
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.providers import ProcessorCatalogResource, ProviderPortsResource
from forge_dagster.sensors.batch_sensors import batch_status_sensor, pending_work_sensor
from forge_dagster.sensors.lease_recovery import lease_recovery_sensor


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment: keys via `dg.EnvVar`; no key means the local simulator."""
    import os

    def env(name: str):
        return dg.EnvVar(name) if os.environ.get(name) else None

    return {
        "lease_store": LeaseStoreResource(),
        "processors": ProcessorCatalogResource(),
        "providers": ProviderPortsResource(
            openai_api_key=env("OPENAI_API_KEY"), anthropic_api_key=env("ANTHROPIC_API_KEY"),
            openai_base_url=os.environ.get("OPENAI_BASE_URL"), anthropic_base_url=os.environ.get("ANTHROPIC_BASE_URL"),
            simulator_url=os.environ.get("FORGE_SIMULATOR_URL", "http://127.0.0.1:8700"),
        ),
    }


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """The definitions, with `resources` replacing the defaults (tests and the demo pass their own)."""
    return dg.Definitions(
        assets=[job_intake, provider_batches, provider_results, validated_outputs],
        asset_checks=[succeeded_outputs_validate, no_stranded_jobs],
        jobs=[build_batches_job, collect_batch_job],
        sensors=[pending_work_sensor, batch_status_sensor, lease_recovery_sensor],
        resources={**default_resources(), **(resources or {})},
    )


defs = build_definitions()
