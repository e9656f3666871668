"""The store's front: one PostgreSQL schema (Forge's tables) behind one connection pool, handed out as
repositories by table. Workers anywhere share the work through it; nothing else holds SQL.

    store = ForgeStore(url)
    store.migrate()
    jobs = store.jobs.claim(10)

The store imports nothing from the engine: routing happens before `intake.enqueue`, the notices a sweep
writes are built by the caller, pacing's SQL lives here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg

from forge_dagster.core.store import db
from forge_dagster.core.store.batch_store import BatchRepository
from forge_dagster.core.store.console_store import ConsoleRepository
from forge_dagster.core.store.cost_store import CostRepository
from forge_dagster.core.store.fleet_store import FleetRepository
from forge_dagster.core.store.intake_store import IntakeRepository
from forge_dagster.core.store.job_store import JobRepository
from forge_dagster.core.store.key_store import KeyRepository
from forge_dagster.core.store.knowledge_store import KnowledgeRepository
from forge_dagster.core.store.operations_store import OperationsRepository
from forge_dagster.core.store.outbox_store import OutboxRepository
from forge_dagster.core.store.pacing_store import PacingRepository
from forge_dagster.core.store.processor_store import ProcessorRepository
from forge_dagster.core.store.run_lease_store import RunLeaseRepository
from forge_dagster.core.store.types import default_owner

# A session idle inside a transaction for longer than the lease TTL (and at least this long) is ended by the
# server: a worker frozen mid-transaction (SIGSTOP, a stalled VM) would otherwise keep its row locks, and
# SKIP LOCKED claims would pass its jobs by long after their leases expired.
IDLE_IN_TRANSACTION_FLOOR_S = 10.0


class ForgeStore:
    """Forge's tables in one PostgreSQL schema, by repository:

    - `jobs`: every fenced transition of a leased job, and reads of jobs and their events
    - `intake`: routed jobs in with one COPY; review of rows other applications inserted
    - `batches`: provider batches (intent, status, results, settling, requeues)
    - `keys`: provider keys (pause, probe, resume), outages, submission holds
    - `costs`: budgets, holds, the ledger, reports and reconciliations
    - `outbox`: rows written beside transitions, and the relay's lanes
    - `processors`: the processor registry, repair lookups and exports
    - `knowledge`: the nightly runtime's tables (memories, fences, research, briefings, healing)
    - `runs`: leases of the Dagster runs that do Forge's work
    - `pacing`: each provider key's schedule shared by every process
    - `operations`: the archive, metrics and the operator's view
    - `fleet`: the `forge work` processes alive now, and the console's view of the fleet
    - `console`: the operator console's reads (filtered pages, histories, rates)
    """

    def __init__(
        self,
        url: str,
        schema: str = "forge",
        *,
        pool_size: int = 8,
        lease_ttl_s: float = 30.0,
        owner: str | None = None,
        application_name: str = "forge",
        idle_in_transaction_s: float | None = None,
    ) -> None:
        self.url = url
        self.schema = db.check_schema(schema)
        self.lease_ttl_s = lease_ttl_s
        self.owner = owner = owner or default_owner()
        self._pool = pool = db.open_pool(url, schema, max_size=pool_size, application_name=application_name,
                                         idle_in_transaction_s=idle_in_transaction_s
                                         or max(lease_ttl_s, IDLE_IN_TRANSACTION_FLOOR_S))
        self.outbox = OutboxRepository(pool)
        self.jobs = JobRepository(pool, owner, lease_ttl_s, self.outbox)
        self.intake = IntakeRepository(pool, owner)
        self.batches = BatchRepository(pool, owner)
        self.keys = KeyRepository(pool, self.outbox)
        self.costs = CostRepository(pool, owner, self.jobs, self.outbox)
        self.processors = ProcessorRepository(pool, owner)
        self.knowledge = KnowledgeRepository(pool)
        self.runs = RunLeaseRepository(pool, owner)
        self.pacing = PacingRepository(pool)
        self.operations = OperationsRepository(pool)
        self.fleet = FleetRepository(pool, owner)
        self.console = ConsoleRepository(pool)

    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now."""
        return db.migrate(self.url, self.schema)

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> ForgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection in one transaction: commits at the end, rolls back on error. Pass it as `conn=`
        to several operations (a transition and its outbox rows) to make them atomic."""
        with self._pool.connection() as conn:
            yield conn

    def statement(self) -> AbstractContextManager[psycopg.Connection]:
        """A connection in autocommit for one self-contained statement: no transaction is left open (and no
        row lock held) if the caller stops between the statement and its commit."""
        return db.one_statement(self._pool)
