"""The lease store as a Dagster resource."""


import dagster as dg
from pydantic import PrivateAttr

from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import open_store
from forge_dagster.core.store import LeaseStore


class LeaseStoreResource(dg.ConfigurableResource):
    """Forge's PostgreSQL lease store. With no `database_url`, the embedded default is brought up."""

    database_url: str | None = None
    db_schema: str = "forge"
    pool_size: int = 4
    lease_ttl_s: float = 30.0

    _store: LeaseStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store = self.open()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def open(self) -> LeaseStore:
        """A new migrated store (the caller closes it)."""
        settings = load_settings()
        if self.database_url:
            settings.database_url = self.database_url
        settings.store_schema = self.db_schema
        _, store = open_store(settings, pool_size=self.pool_size, lease_ttl_s=self.lease_ttl_s)
        return store

    @property
    def store(self) -> LeaseStore:
        if self._store is None:
            self._store = self.open()
        return self._store
