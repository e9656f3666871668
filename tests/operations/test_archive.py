"""The archive: cooled batches and their jobs leave the hot tables and stay queryable."""

from __future__ import annotations

import dagster as dg

from forge_dagster.assets.operations import archive_is_whole, batch_archive
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.ops.archive import archive_cooled
from forge_dagster.definitions import build_definitions
from forge_dagster.resources.lease_store import LeaseStoreResource
from tests.helpers import run_batch_round
from tests.operations.conftest import ticket_specs


def _hot_rows(store) -> tuple[int, int, int]:
    with store.transaction() as conn:
        return conn.execute("SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM jobs), "
                            "(SELECT count(*) FROM batch_results)").fetchone()


def test_cooled_batches_move_to_the_archive_and_stay_queryable(store, catalog, ports):
    ids = submit_jobs(store, ticket_specs(5)).accepted
    [batch_id] = run_batch_round(store, catalog, ports)
    before = store.operations.metrics_snapshot()

    assert archive_cooled(store, older_than_hours=1).moved == 0  # collected just now: not cooled yet
    report = archive_cooled(store, older_than_hours=0)
    assert (report.batches, report.batch_jobs, report.result_lines) == (1, 5, 5)
    assert _hot_rows(store) == (0, 0, 0)

    job = store.operations.find_job(ids[0])
    assert job["archived"] and job["state"] == "succeeded"
    assert set(job["output"]) == {"category", "priority", "summary"}
    batch = store.operations.find_batch(batch_id)
    assert batch["archived"] and batch["state"] == "archived" and batch["request_count"] == 5
    assert [j["id"] for j in store.operations.archived_batch_jobs(batch_id)] == ids
    assert store.jobs.events(ids[0])  # the audit trail stays where it was
    assert store.operations.split_batches() == (0, 0)

    after = store.operations.metrics_snapshot()  # counters never go back when rows move
    assert after.jobs_by_state == before.jobs_by_state and after.usage == before.usage
    assert after.provider_outcomes == before.provider_outcomes

    again = submit_jobs(store, ticket_specs(5))  # the same ids once more: still duplicates after archiving
    assert again.accepted == [] and len(again.rejected) == 5


def test_requeued_jobs_stay_hot_while_their_old_batch_is_archived(store, catalog, ports, sim):
    sim.configure(expire_batches=True, expire_complete_fraction=0.5)
    submit_jobs(store, ticket_specs(10))
    [batch_id] = run_batch_round(store, catalog, ports)
    requeued = store.jobs.counts().get("pending", 0)
    assert 0 < requeued < 10  # these left the batch for another attempt
    report = archive_cooled(store, older_than_hours=0)
    assert report.batches == 1 and report.batch_jobs == 10 - requeued
    assert store.operations.find_batch(batch_id)["archived"]
    assert store.jobs.counts() == {"pending": requeued}  # still in the hot table, ready to be claimed
    assert store.operations.split_batches() == (0, 0)


def test_archive_schedule_materialises_the_archive_asset(store, catalog, ports, database_url, schema):
    submit_jobs(store, ticket_specs(3))
    run_batch_round(store, catalog, ports)
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("archive")
    assert schedule.job_name == "archive_cooled_batches"

    resources = {"lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema)}
    result = dg.materialize([batch_archive, archive_is_whole], resources=resources,
                            run_config={"ops": {"batch_archive": {"config": {"older_than_hours": 0}}}})
    assert result.success
    meta = result.asset_materializations_for_node("batch_archive")[0].metadata
    assert meta["batches_moved"].value == 1 and meta["jobs_moved"].value == 3
    assert meta["archived_jobs"].value == 3
    [check] = result.get_asset_check_evaluations()
    assert check.passed
