"""The local model (Ollama, over the official client) as a Dagster resource."""

import dagster as dg
from pydantic import PrivateAttr

from forge_dagster.core.config import load_settings
from forge_dagster.core.nightly.ollama import DEFAULT_MODEL, OllamaRuntime
from forge_dagster.core.ops.service_checks import ollama_host


class OllamaResource(dg.ConfigurableResource):
    """Ollama at `host` (OLLAMA_HOST); with none set, the local simulator (a test double) at
    FORGE_SIMULATOR_URL. `model` is the model the nightly chain warms up and uses."""

    host: str | None = None
    model: str = DEFAULT_MODEL
    timeout_s: float = 120.0
    keep_alive: str = "30m"
    _runtime: OllamaRuntime | None = PrivateAttr(default=None)

    def resolved_host(self) -> str:
        """`host`, else OLLAMA_HOST, else the simulator (FORGE_SIMULATOR_URL or its default port): the
        same resolution `forge health` checks."""
        return self.host or ollama_host(load_settings())[0]

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._runtime = OllamaRuntime(self.resolved_host(), self.model, timeout_s=self.timeout_s,
                                      keep_alive=self.keep_alive)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    @property
    def runtime(self) -> OllamaRuntime:
        """The run's runtime (one HTTP client, made in `setup_for_execution` and closed in teardown); outside
        a run, one made on first use and kept by this resource."""
        if self._runtime is None:
            self._runtime = OllamaRuntime(self.resolved_host(), self.model, timeout_s=self.timeout_s,
                                          keep_alive=self.keep_alive)
        return self._runtime
