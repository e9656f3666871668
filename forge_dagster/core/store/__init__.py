"""The PostgreSQL store (DESIGN.md section 4): the store front, and the types it hands out."""

from forge_dagster.core.models import EnqueueReport, JobSpec, Rejection
from forge_dagster.core.store.forge_store import ForgeStore
from forge_dagster.core.store.types import ClaimedJob, LeaseLost, OutboxMessage, OutboxRow, SweepReport

__all__ = [
    "ClaimedJob", "EnqueueReport", "ForgeStore", "JobSpec", "LeaseLost", "OutboxMessage", "OutboxRow",
    "Rejection", "SweepReport",
]
