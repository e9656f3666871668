"""Forge's Dagster definitions: resources, assets, sensors and jobs."""

from __future__ import annotations

import dagster as dg

from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.sensors.lease_recovery import lease_recovery_sensor

defs = dg.Definitions(
    sensors=[lease_recovery_sensor],
    resources={"lease_store": LeaseStoreResource()},
)
