"""The PostgreSQL lease store (DESIGN.md section 4): the store front, and the types it hands out."""

from forge_dagster.core.models import EnqueueReport, JobSpec, Rejection
from forge_dagster.core.store.lease_store import LeaseStore
from forge_dagster.core.store.types import ClaimedJob, LeaseLost, OutboxMessage, OutboxRow, SweepReport

__all__ = [
    "ClaimedJob", "EnqueueReport", "JobSpec", "LeaseLost", "LeaseStore", "OutboxMessage", "OutboxRow",
    "Rejection", "SweepReport",
]
