"""The archive: cooled batches and their jobs leave the hot tables after a configurable age and stay
queryable (`all_jobs` / `all_batches` views, `ForgeStore.operations.find_job`).

The age is `FORGE_ARCHIVE_AFTER_HOURS` (default 168, a week) unless the caller passes one; the
`archive` schedule runs it nightly through the `batch_archive` asset.
"""

from __future__ import annotations

from collections.abc import Mapping

from forge_dagster.core.config import DEFAULT_ARCHIVE_AFTER_HOURS, load_settings
from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.operations_store import ArchiveReport

AGE_ENV = "FORGE_ARCHIVE_AFTER_HOURS"
DEFAULT_AGE_HOURS = DEFAULT_ARCHIVE_AFTER_HOURS


def archive_age_hours(environ: Mapping[str, str] | None = None) -> float:
    """The configured age after which a collected batch is cooled (`environ` alone when given)."""
    value = load_settings(environ).archive_after_hours
    if value < 0:
        raise ValueError(f"{AGE_ENV} must be >= 0, got {value}")
    return value


def archive_cooled(store: ForgeStore, *, older_than_hours: float | None = None, limit: int = 500) -> ArchiveReport:
    """Move batches collected more than `older_than_hours` ago (with their jobs and result lines),
    finished unbatched jobs and delivered outbox rows of that age into the archive."""
    hours = archive_age_hours() if older_than_hours is None else older_than_hours
    return store.operations.archive(hours * 3600.0, limit=limit)
