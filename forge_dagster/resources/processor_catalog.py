"""The processor catalog as a Dagster resource."""

import dagster as dg

from forge_dagster.core.platform.catalog import ProcessorCatalog, default_processor_dirs, load_processors
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import ForgeStore


class ProcessorCatalogResource(dg.ConfigurableResource):
    """The processors: YAML definitions (the packaged examples plus `directory` when given), registered
    in the store's processor registry, which decides each version's status."""

    directory: str | None = None

    def load(self, store: ForgeStore | None = None) -> ProcessorCatalog:
        """The registry's catalog of `store` (synced from the YAML first); the YAML alone without one."""
        dirs = default_processor_dirs() + ([self.directory] if self.directory else [])
        if store is not None:
            return load_catalog(store, dirs)
        return load_processors(dirs)
