"""The asset checks on validated outputs fail when acceptance left something wrong behind."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg
import pytest

from forge_dagster.assets.batch_pipeline import (
    batch_partition_key,
    batch_partitions,
    provider_results,
    validated_outputs,
)
from forge_dagster.assets.checks import BATCH_OUTPUT_CHECKS
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import JobSpec
from forge_dagster.resources.processor_catalog import ProcessorCatalogResource
from tests.helpers import run_batch_round
from tests.pipeline.conftest import ticket
from tests.pipeline.test_engine import enqueue

TICKET_YAML = Path(__file__).resolve().parents[2] / "forge_dagster" / "examples" / "processors" / "ticket_triage.yaml"


def test_output_checks_fail_on_a_missing_cost_and_on_an_output_changed_after_acceptance(resources, store, tmp_path):
    # A processor on a model Forge has no price for: its jobs succeed, their tokens are booked without a cost.
    (tmp_path / "unpriced.yaml").write_text(TICKET_YAML.read_text().replace("name: ticket_triage", "name: unpriced")
                                            .replace("model: gpt-4o-mini", "model: gpt-4o-mini-unpriced"))
    resources = {**resources, "processors": ProcessorCatalogResource(directory=str(tmp_path))}
    catalog = resources["processors"].load(store)
    [changed, lost, _] = enqueue(store, [ticket(i) for i in range(3)])
    [unpriced] = submit_jobs(store, [JobSpec("unpriced", ticket(9)["input"], processor_version="1.0.0")]).accepted
    batches = run_batch_round(store, catalog, resources["provider_keys"].ports)
    assert store.jobs.counts() == {"succeeded": 4}
    edit = "UPDATE jobs SET output = '{\"category\": \"spam\"}' WHERE id = %s"
    with pytest.raises(psycopg.errors.CheckViolation), store.transaction() as conn:
        conn.execute(edit, (changed,))  # the store refuses an accepted output edited in place
    with store.transaction() as conn:  # an owner goes around the store's rule: the checks still see it
        conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_succeeded_update_needs_accepted_output")
        conn.execute(edit, (changed,))
        conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_succeeded_update_needs_accepted_output")
        conn.execute("DELETE FROM costs WHERE job_id = %s", (lost,))  # and a booking goes missing

    instance = dg.DagsterInstance.ephemeral()
    key = batch_partition_key(batches[0])
    instance.add_dynamic_partitions(batch_partitions.name, [key])
    result = dg.materialize([provider_results, validated_outputs, *BATCH_OUTPUT_CHECKS], partition_key=key,
                            instance=instance, resources=resources)
    assert result.success  # the checks do not block; they say what is wrong
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    missing = checks["succeeded_jobs_have_output_and_cost"]
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.ERROR
    assert missing.metadata["failing"].value == 2
    assert f"job {lost}: tokens used but no cost booked for attempt 1" in missing.metadata["examples"].value
    assert (f"job {unpriced}: tokens booked without a price for attempt 1 (no price for its model)"
            in missing.metadata["examples"].value)
    schema = checks["succeeded_outputs_validate"]
    assert not schema.passed and schema.metadata["failing"].value == 1
    assert schema.metadata["examples"].value.startswith(f"job {changed}: ")
    assert checks["no_stranded_jobs"].passed
