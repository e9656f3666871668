"""The local model (Ollama, over the official client) as a Dagster resource."""

import os

import dagster as dg

from forge_dagster.core.nightly.ollama import DEFAULT_MODEL, OllamaRuntime
from forge_dagster.core.ops.service_checks import ollama_host
from forge_dagster.core.process_cache import ProcessCache

_runtimes: ProcessCache[tuple, OllamaRuntime] = ProcessCache("Ollama runtimes by configuration")


class OllamaResource(dg.ConfigurableResource):
    """Ollama at `host` (OLLAMA_HOST); with none set, the local simulator (a test double) at
    FORGE_SIMULATOR_URL. `model` is the model the nightly chain warms up and uses."""

    host: str | None = None
    model: str = DEFAULT_MODEL
    timeout_s: float = 120.0
    keep_alive: str = "30m"

    def resolved_host(self) -> str:
        """`host`, else OLLAMA_HOST, else the simulator (FORGE_SIMULATOR_URL or its default port): the
        same resolution `forge health` checks."""
        return self.host or ollama_host(os.environ)[0]

    @property
    def runtime(self) -> OllamaRuntime:
        """The runtime (one HTTP client) shared per process and configuration."""
        key = (self.resolved_host(), self.model, self.timeout_s, self.keep_alive)
        return _runtimes.get_or_create(key, lambda: OllamaRuntime(key[0], self.model, timeout_s=self.timeout_s,
                                                                  keep_alive=self.keep_alive))
