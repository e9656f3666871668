"""The PostgreSQL lease store (DESIGN.md section 4)."""

from forge_dagster.core.store.lease_store import (
    ClaimedJob,
    EnqueueReport,
    JobSpec,
    LeaseLost,
    LeaseStore,
    OutboxMessage,
    OutboxRow,
    Rejection,
    SweepReport,
)

__all__ = [
    "ClaimedJob", "EnqueueReport", "JobSpec", "LeaseLost", "LeaseStore", "OutboxMessage", "OutboxRow",
    "Rejection", "SweepReport",
]
