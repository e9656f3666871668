"""The lease store as a Dagster resource; in a step of a run tagged `forge/run_lease` it also holds the
run's lease (see core/ops/run_leases.py) from the step's start to its end."""

import atexit

import dagster as dg
from pydantic import PrivateAttr

from forge_dagster.constants import RUN_LEASE_TAG
from forge_dagster.core.config import load_settings
from forge_dagster.core.ops.run_leases import RunHeartbeat
from forge_dagster.core.process_cache import ProcessCache
from forge_dagster.core.runtime import open_store
from forge_dagster.core.store import ForgeStore

_open_stores: ProcessCache[tuple, ForgeStore] = ProcessCache("migrated stores by configuration")


def _close_all() -> None:
    for store in _open_stores.values():
        store.close()


atexit.register(_close_all)


class LeaseStoreResource(dg.ConfigurableResource):
    """Forge's PostgreSQL lease store. With no `database_url` (and no FORGE_DATABASE_URL), the embedded
    default is brought up. One migrated store (and connection pool) is shared per process, so sensor
    ticks and runs in the same process do not reconnect or re-migrate."""

    database_url: str | None = None
    db_schema: str | None = None
    pool_size: int = 4
    lease_ttl_s: float = 30.0
    _run_heartbeat: RunHeartbeat | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """In a step of a leased run: take the run's lease and keep it while the step works. A run already
        declared dead raises RunDeclaredDead, so a process that outlived its run does no more work for it."""
        run = context.run
        if run is None or run.tags.get(RUN_LEASE_TAG) != "true":
            return
        settings = load_settings()
        self._run_heartbeat = RunHeartbeat(self.store, run.run_id, run.job_name, run.tags.get("dagster/partition"),
                                           settings.run_lease_ttl_s, settings.run_step_handover_s).start()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run_heartbeat is not None:
            self._run_heartbeat.stop()
            self._run_heartbeat = None

    # The store's repositories, handed out directly (`lease_store.jobs`, `lease_store.knowledge`, ...).
    jobs = property(lambda self: self.store.jobs)
    intake = property(lambda self: self.store.intake)
    batches = property(lambda self: self.store.batches)
    provider_keys = property(lambda self: self.store.keys)  # not `keys`: Dagster reads a resource as a mapping
    costs = property(lambda self: self.store.costs)
    outbox = property(lambda self: self.store.outbox)
    processors = property(lambda self: self.store.processors)
    knowledge = property(lambda self: self.store.knowledge)
    runs = property(lambda self: self.store.runs)
    operations = property(lambda self: self.store.operations)

    @property
    def store(self) -> ForgeStore:
        """The whole store, for engine functions that take it (the repositories are above)."""
        settings = load_settings()
        if self.database_url:
            settings.database_url = self.database_url
        if self.db_schema:
            settings.store_schema = self.db_schema
        key = (settings.database_url, settings.store_schema, str(settings.forge_home), self.pool_size,
               self.lease_ttl_s)
        return _open_stores.get_or_create(key, lambda: open_store(settings, dagster=False, pool_size=self.pool_size,
                                                                  lease_ttl_s=self.lease_ttl_s)[1])
