"""Provider ports and the processor catalog as Dagster resources."""


import hashlib
import threading

import dagster as dg

from forge_dagster.core.models import Provider
from forge_dagster.core.processors import ProcessorCatalog, load_processors
from forge_dagster.core.providers.base import ProviderCredentials
from forge_dagster.core.providers.registry import ProviderRegistry
from forge_dagster.core.secrets import register_secret

_lock = threading.Lock()
_registries: dict[tuple, ProviderRegistry] = {}

SIMULATOR_KEY = "sim-no-key"  # sent to the local simulator when no real key is configured


class ProviderPortsResource(dg.ConfigurableResource):
    """One port per provider over the official clients. Keys come from `dg.EnvVar`; with no key, the
    port talks to the local simulator at `simulator_url` (a test double, never a provider)."""

    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    simulator_url: str | None = None
    timeout_s: float = 60.0


    def _credentials(self) -> dict[Provider, ProviderCredentials]:
        creds = {}
        for provider, key, base, sim_base in (
            (Provider.OPENAI, self.openai_api_key, self.openai_base_url, "/v1"),
            (Provider.ANTHROPIC, self.anthropic_api_key, self.anthropic_base_url, ""),
        ):
            if key:
                register_secret(key)
                creds[provider] = ProviderCredentials(key, base, timeout_s=self.timeout_s)
            elif self.simulator_url:
                creds[provider] = ProviderCredentials(SIMULATOR_KEY, self.simulator_url.rstrip("/") + sim_base,
                                                      alias="simulator", timeout_s=self.timeout_s)
        return creds

    @property
    def ports(self) -> ProviderRegistry:
        """The ports, shared per process: building a client costs a TLS context (~80 ms)."""
        credentials = self._credentials()
        key = tuple(sorted((str(p), hashlib.sha256(c.get_secret_value().encode()).hexdigest(), c.base_url or "",
                            c.timeout_s) for p, c in credentials.items()))
        with _lock:
            registry = _registries.get(key)
            if registry is None:
                registry = _registries[key] = ProviderRegistry.from_credentials(credentials)
        return registry


class ProcessorCatalogResource(dg.ConfigurableResource):
    """The processors: YAML definitions (the packaged examples plus `directory` when given), registered
    in the store's processor registry, which decides each version's status."""

    directory: str | None = None

    def load(self, store=None) -> ProcessorCatalog:
        """The registry's catalog of `store` (synced from the YAML first); the YAML alone without one."""
        from forge_dagster.core.processors import default_processor_dirs

        dirs = default_processor_dirs() + ([self.directory] if self.directory else [])
        if store is not None:
            from forge_dagster.core.processor_registry import load_catalog

            return load_catalog(store, dirs)
        return load_processors(dirs)
