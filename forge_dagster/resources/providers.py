"""Provider ports and the processor catalog as Dagster resources."""


import os
import threading

import dagster as dg

from forge_dagster.core.platform.catalog import ProcessorCatalog, load_processors
from forge_dagster.core.providers.keyring import KeyRing, keys_from_env
from forge_dagster.core.providers.quota import KeyPorts
from forge_dagster.core.secrets import register_secret

_lock = threading.Lock()
_key_ports: dict[tuple, KeyPorts] = {}


class ProviderPortsResource(dg.ConfigurableResource):
    """One port per provider key over the official clients (every key the environment names: see
    core/providers/keyring.py). The primary keys come from `dg.EnvVar`; with no key at all, each provider's
    port talks to the local simulator at `simulator_url` (a test double, never a provider)."""

    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    simulator_url: str | None = None
    timeout_s: float = 60.0

    @property
    def ports(self) -> KeyPorts:
        """The ports by provider (its first key) and by key (`candidates`, `for_batch`), shared per
        process: building a client costs a TLS context (~80 ms)."""
        env = dict(os.environ)
        for name, value in (("OPENAI_API_KEY", self.openai_api_key), ("ANTHROPIC_API_KEY", self.anthropic_api_key),
                            ("OPENAI_BASE_URL", self.openai_base_url),
                            ("ANTHROPIC_BASE_URL", self.anthropic_base_url)):
            if value:
                env[name] = value
        keys = keys_from_env(env, simulator_url=self.simulator_url, timeout_s=self.timeout_s)
        for key in keys:
            register_secret(key.credentials.get_secret_value())
        cache_key = tuple((k.name, k.record().fingerprint, k.credentials.base_url or "", k.rpm, k.tpm)
                          for k in keys) + (self.timeout_s,)
        with _lock:
            ports = _key_ports.get(cache_key)
            if ports is None:
                ports = _key_ports[cache_key] = KeyPorts(KeyRing(keys))
        return ports


class ProcessorCatalogResource(dg.ConfigurableResource):
    """The processors: YAML definitions (the packaged examples plus `directory` when given), registered
    in the store's processor registry, which decides each version's status."""

    directory: str | None = None

    def load(self, store=None) -> ProcessorCatalog:
        """The registry's catalog of `store` (synced from the YAML first); the YAML alone without one."""
        from forge_dagster.core.platform.catalog import default_processor_dirs

        dirs = default_processor_dirs() + ([self.directory] if self.directory else [])
        if store is not None:
            from forge_dagster.core.platform.registry import load_catalog

            return load_catalog(store, dirs)
        return load_processors(dirs)
