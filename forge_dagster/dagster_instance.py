"""Settings that live in Dagster's own storage rather than in dagster.yaml: the pools' limits."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import dagster as dg

from forge_dagster.constants import GPU_POOL
from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import redact_url

# Pools whose limit differs from `concurrency.pools.default_limit` (the only pool setting dagster.yaml
# takes): one GPU, so one GPU step at a time.
POOL_LIMITS = {GPU_POOL: 1}

log = logging.getLogger(__name__)


def apply_pool_limits(dagster_home: Path) -> None:
    """Set POOL_LIMITS in the Dagster storage of `dagster_home` (what `dagster instance concurrency set`
    does), once per home and storage: a marker file records what was applied. Must run before the first
    GPU step claims a slot, or Dagster creates the pool at the default limit; `forge dev` and `forge demo`
    call it on start."""
    pg_url = load_settings().dagster_pg_url
    config = (dagster_home / "dagster.yaml").read_text() + redact_url(pg_url.get_secret_value() if pg_url else "")
    marker = dagster_home / ".forge-pool-limits"
    applied = hashlib.sha256(json.dumps([config, POOL_LIMITS], sort_keys=True).encode()).hexdigest()
    if marker.exists() and marker.read_text().strip() == applied:
        return
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            for pool, limit in POOL_LIMITS.items():
                instance.event_log_storage.set_concurrency_slots(pool, limit)
    except Exception as exc:  # noqa: BLE001 - retried on the next start; the GPU mutex still serialises
        log.warning("forge: could not set Dagster pool limits %s: %s", POOL_LIMITS, exc)
        return
    marker.write_text(applied + "\n")
