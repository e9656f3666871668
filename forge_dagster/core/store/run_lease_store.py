"""Leases of the Dagster runs that do Forge's work, in the store. Reached as `ForgeStore.runs`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from forge_dagster.core.store import db, job_sql, run_lease_sql

SWEEPER = "sweeper"  # the actor of lease recoveries in job_events, as the expired-lease sweep


@dataclass(frozen=True)
class RunToCheck:
    """An in-flight run as the orchestrator sees it; `unleased_dead` when it has been started for longer
    than the start timeout, so having no lease at all means its process died."""

    run_id: str
    job_name: str
    partition: str | None
    unleased_dead: bool


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    owners: list[str]
    heartbeat_at: datetime | None
    reason: str
    released_jobs: int = 0
    expedited_batches: int = 0


class RunLeaseRepository:
    def __init__(self, pool, owner: str) -> None:
        self._pool, self.owner = pool, owner

    def take(self, run_id: str, job_name: str, partition: str | None, ttl_s: float) -> bool:
        """Take (or join) the run's lease for this process; False when the run was declared dead."""
        params = {"run_id": run_id, "job_name": job_name, "partition": partition, "owner": self.owner,
                  "ttl": ttl_s}
        with db.one_statement(self._pool) as conn:
            return conn.execute(run_lease_sql.TAKE_RUN_LEASE, params).fetchone() is not None

    def renew(self, run_id: str, ttl_s: float) -> bool:
        """Extend the run's lease; False when the run was declared dead (whoever holds it must stop)."""
        with db.one_statement(self._pool) as conn:
            return conn.execute(run_lease_sql.RENEW_RUN_LEASE, {"run_id": run_id, "ttl": ttl_s}).fetchone() \
                is not None

    def declare_dead(self, runs: Sequence[RunToCheck]) -> list[DeadRun]:
        """Declare dead the runs among `runs` whose lease expired (or that never took one past their start
        timeout), and give back what their processes held: claimed jobs return to pending with their attempt
        unspent, and unfinished submissions become resumable at once. Runs declared dead earlier come back
        too (their reporting may have been interrupted); their claims were given back already."""
        if not runs:
            return []
        params = {"run_ids": [r.run_id for r in runs], "job_names": [r.job_name for r in runs],
                  "partitions": [r.partition for r in runs], "unleased": [r.unleased_dead for r in runs]}
        dead = []
        with self._pool.connection() as conn:  # declaring and giving back commit together
            fresh = conn.execute(run_lease_sql.DECLARE_RUNS_DEAD, params).fetchall()
            for run_id, owners, heartbeat_at, reason in fresh:
                released = expedited = 0
                if owners:
                    note = f"released: run {run_id[:8]} died before submitting (attempt given back)"
                    released = conn.execute(job_sql.RELEASE_DEAD_RUN_CLAIMS,
                                            {"owners": owners, "reason": note, "actor": SWEEPER}).fetchone()[0]
                    expedited = len(conn.execute(run_lease_sql.EXPEDITE_DEAD_RUN_SUBMISSIONS,
                                                 {"owners": owners}).fetchall())
                dead.append(DeadRun(run_id, list(owners), heartbeat_at, reason, released, expedited))
            known = {d.run_id for d in dead}
            earlier = conn.execute(run_lease_sql.DEAD_RUNS,
                                   {"run_ids": [r.run_id for r in runs if r.run_id not in known]}).fetchall()
        return dead + [DeadRun(run_id, list(owners), at, reason) for run_id, owners, at, reason in earlier]

    def known(self, run_ids: Sequence[str]) -> set[str]:
        """The runs among `run_ids` that took a lease in this store at some point."""
        if not run_ids:
            return set()
        with db.one_statement(self._pool) as conn:
            return {r[0] for r in conn.execute(run_lease_sql.KNOWN_RUNS, {"run_ids": list(run_ids)})}

    def prune(self, days: int = 7) -> int:
        with db.one_statement(self._pool) as conn:
            return conn.execute(run_lease_sql.PRUNE_RUN_LEASES, {"days": days}).rowcount
