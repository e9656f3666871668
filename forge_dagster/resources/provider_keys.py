"""Provider keys as one Dagster resource: the ports for batch work and the key ring for realtime calls and probes."""

import dagster as dg
from pydantic import PrivateAttr

from forge_dagster.core.config import load_settings
from forge_dagster.core.process_cache import ProcessCache
from forge_dagster.core.providers.keyring import KeyRing, ProviderKey, keys_from_env
from forge_dagster.core.providers.quota import KeyPorts
from forge_dagster.core.secrets import register_secret

_key_ports: ProcessCache[tuple, KeyPorts] = ProcessCache("batch ports by key set")


class ProviderKeysResource(dg.ConfigurableResource):
    """Every provider key this deployment may use (see core/providers/keyring.py for the variables:
    OPENAI_API_KEY, OPENAI_API_KEY_<NAME>, FORGE_PROVIDER_KEYS, per-key RPM/TPM). The primary keys and
    base URLs given here (through `dg.EnvVar`) win over the settings; with no key at all, each provider's
    key is the local simulator's at `simulator_url` (a test double, never a provider)."""

    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_base_url: str | None = None
    simulator_url: str | None = None
    timeout_s: float = 60.0
    _run_ring: KeyRing | None = PrivateAttr(default=None)

    def configured_keys(self) -> list[ProviderKey]:
        """The keys, each registered for redaction (no key reaches a log line)."""
        env = dict(load_settings().provider_environ)
        for name, value in (("OPENAI_API_KEY", self.openai_api_key), ("ANTHROPIC_API_KEY", self.anthropic_api_key),
                            ("OPENAI_BASE_URL", self.openai_base_url),
                            ("ANTHROPIC_BASE_URL", self.anthropic_base_url)):
            if value:
                env[name] = value
        keys = keys_from_env(env, simulator_url=self.simulator_url, timeout_s=self.timeout_s)
        for key in keys:
            register_secret(key.credentials.get_secret_value())
        return keys

    @property
    def ports(self) -> KeyPorts:
        """Ports for batch work, one per key, shared per process (building a client costs a TLS context,
        ~80 ms): as a mapping each provider's first key; `candidates` and `for_batch` by key."""
        keys = self.configured_keys()
        cache_key = tuple((k.name, k.record().fingerprint, k.credentials.base_url or "", k.rpm, k.tpm)
                          for k in keys) + (self.timeout_s,)
        return _key_ports.get_or_create(cache_key, lambda: KeyPorts(KeyRing(keys)))

    def new_ring(self) -> KeyRing:
        """A new key ring (its ports and limiters are its own: close it after use)."""
        return KeyRing(self.configured_keys())

    def ring(self) -> KeyRing:
        """The run's key ring (a run's limiters pace that run's calls), made in `setup_for_execution` and
        closed in teardown; outside a run or sensor tick, a new one the caller closes."""
        return self._run_ring if self._run_ring is not None else self.new_ring()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_ring = self.new_ring()  # no client yet: a ring builds a key's port on first use

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run_ring is not None:
            self._run_ring.close()
            self._run_ring = None
