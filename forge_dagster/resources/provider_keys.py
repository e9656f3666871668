"""Provider keys for realtime calls, batch work and quota probes, as a Dagster resource."""

import os

import dagster as dg

from forge_dagster.core.providers.keyring import KeyRing
from forge_dagster.core.providers.quota import KeyPorts


class ProviderKeysResource(dg.ConfigurableResource):
    """Every provider key this deployment may use (see core/providers/keyring.py for the variables:
    OPENAI_API_KEY, OPENAI_API_KEY_<NAME>, FORGE_PROVIDER_KEYS, per-key RPM/TPM). The primary keys come
    through `dg.EnvVar`; with no key at all, the simulator's key at `simulator_url` (a test double)."""

    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    simulator_url: str | None = None
    timeout_s: float = 60.0

    def ring(self) -> KeyRing:
        """A new key ring (ports and limiters are per run: a run's limiter paces that run's calls)."""
        env = dict(os.environ)
        for name, value in (("OPENAI_API_KEY", self.openai_api_key), ("ANTHROPIC_API_KEY", self.anthropic_api_key)):
            if value:
                env[name] = value
        return KeyRing.from_env(env, simulator_url=self.simulator_url, timeout_s=self.timeout_s)

    def key_ports(self) -> KeyPorts:
        """Ports for batch work, one per key (close them after the run): the builder skips a paused key
        and falls back to the provider's next one; each batch is polled and collected through its key."""
        return KeyPorts(self.ring())
