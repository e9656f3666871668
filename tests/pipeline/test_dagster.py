"""The pipeline through Dagster: materialising the asset chain, sensors' run keys, skips and cursors."""

from __future__ import annotations

import json

import dagster as dg

from forge_dagster.assets.batch_pipeline import (
    batch_partitions,
    job_intake,
    provider_batches,
    provider_results,
    validated_outputs,
)
from forge_dagster.assets.checks import BATCH_OUTPUT_CHECKS
from forge_dagster.definitions import build_definitions
from forge_dagster.sensors.batch_sensors import batch_status_sensor
from tests.pipeline.conftest import review, ticket, write_inbox


def _sensor(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return sensor(context)


def test_asset_chain_takes_inbox_files_to_validated_outputs(tmp_path, resources, store):
    inbox = write_inbox(tmp_path / "inbox", [ticket(i) for i in range(8)] + [review(i) for i in range(8)]
                        + [{"processor": "nope", "input": {}}])
    instance = dg.DagsterInstance.ephemeral()
    built = dg.materialize([job_intake, provider_batches], instance=instance, resources=resources,
                           run_config={"ops": {"job_intake": {"config": {"inbox": str(inbox)}}}})
    assert built.success
    intake_meta = built.asset_materializations_for_node("job_intake")[0].metadata
    assert (intake_meta["accepted"].value, intake_meta["rejected"].value) == (16, 1)
    assert (inbox / "processed" / "jobs.jsonl.report.json").exists()
    batches_meta = built.asset_materializations_for_node("provider_batches")[0].metadata
    assert batches_meta["batches_submitted"].value == 2

    result = _sensor(batch_status_sensor, instance, resources)
    keys = sorted(r.partition_key for r in result.run_requests)
    assert len(keys) == 2
    assert sorted(r.run_key for r in result.run_requests) == [f"collect:{k}" for k in keys]
    assert sorted(r.tags["forge/provider"] for r in result.run_requests) == ["anthropic", "openai"]
    assert list(result.dynamic_partitions_requests[0].partition_keys) == keys
    instance.add_dynamic_partitions(batch_partitions.name, keys)

    for key in keys:
        collected = dg.materialize([provider_results, validated_outputs, *BATCH_OUTPUT_CHECKS],
                                   partition_key=key, instance=instance, resources=resources)
        assert collected.success
        meta = collected.asset_materializations_for_node("validated_outputs")[0].metadata
        assert meta["jobs_succeeded"].value == 8
        assert meta["cost_usd"].value > 0
        assert any(k.endswith(".input_tokens") for k in meta)
        checks = collected.get_asset_check_evaluations()
        assert len(checks) == len(BATCH_OUTPUT_CHECKS) and all(c.passed for c in checks)
    assert store.jobs.counts() == {"succeeded": 16}

    # Once collected, a batch is not requested again.
    again = _sensor(batch_status_sensor, instance, resources)
    assert again.run_requests == [] and "none ended" in again.skip_reason.skip_message


def test_batch_status_sensor_polls_in_flight_batches_and_keeps_a_small_cursor(resources, store, sim, tmp_path):
    sim.configure(batch_processing_s=1000)
    inbox = write_inbox(tmp_path / "inbox", [ticket(i) for i in range(3)])
    instance = dg.DagsterInstance.ephemeral()
    dg.materialize([job_intake, provider_batches], instance=instance, resources=resources,
                   run_config={"ops": {"job_intake": {"config": {"inbox": str(inbox)}}}})
    result = _sensor(batch_status_sensor, instance, resources, cursor=json.dumps({"ticks": 4}))
    assert result.run_requests == []
    assert result.skip_reason.skip_message == "polled 1 in-flight batches; none ended"
    assert json.loads(result.cursor) == {"ticks": 5, "polled": 1, "ended_waiting": 0}


def test_definitions_load_with_every_asset_job_and_sensor():
    defs = build_definitions()
    repo = defs.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= {
        "job_intake", "provider_batches", "provider_results", "validated_outputs"}
    assert {s.name for s in repo.sensor_defs} == {
        "pending_work_sensor", "batch_status_sensor", "lease_recovery_sensor", "realtime_work_sensor",
        "key_probe_sensor", "outbox_relay_sensor", "healing_sensor", "run_liveness_sensor"}
    assert defs.resolve_job_def("collect_batch").partitions_def == batch_partitions
