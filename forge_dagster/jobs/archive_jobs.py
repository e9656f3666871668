"""Schedules of the operator's view: the nightly `archive` of cooled batches, and the ledgers' refresh."""

import dagster as dg

from forge_dagster.assets.operations import OPERATOR_VIEW_ASSETS, batch_archive

archive_job = dg.define_asset_job(
    "archive_cooled_batches", selection=dg.AssetSelection.assets(batch_archive),
    description="Move batches collected longer ago than the configured age (and their jobs) to the archive.",
)

operator_view_job = dg.define_asset_job(
    "refresh_operator_view", selection=dg.AssetSelection.assets(*OPERATOR_VIEW_ASSETS),
    description="Refresh the jobs, batches, costs, credentials and outbox ledgers.",
)

archive_schedule = dg.ScheduleDefinition(
    name="archive", job=archive_job, cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: cooled batches leave the hot tables (age: FORGE_ARCHIVE_AFTER_HOURS, default 168).",
)

operator_view_schedule = dg.ScheduleDefinition(
    name="operator_view", job=operator_view_job, cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes: the operator's ledgers and their checks.",
)
