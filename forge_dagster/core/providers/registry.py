"""Build provider ports and keep one per provider."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from forge_dagster.core.config import load_settings
from forge_dagster.core.models import Provider
from forge_dagster.core.providers.base import ProviderCredentials, ProviderPort

# Imported when first built, so a process using one provider never loads the other SDK.
PORT_CLASSES: dict[Provider, str] = {
    Provider.OPENAI: "forge_dagster.core.providers.openai_port:OpenAIPort",
    Provider.ANTHROPIC: "forge_dagster.core.providers.anthropic_port:AnthropicPort",
}
ENV_NAMES: dict[Provider, tuple[str, str]] = {
    Provider.OPENAI: ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    Provider.ANTHROPIC: ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
}


def build_port(provider: Provider | str, credentials: ProviderCredentials, **options: Any) -> ProviderPort:
    """The port for `provider` with `credentials`; `options` go to the port (e.g. `reconcile_attempts`)."""
    module, name = PORT_CLASSES[Provider(provider)].split(":")
    port_class: type[ProviderPort] = getattr(importlib.import_module(module), name)
    return port_class(credentials, **options)


class ProviderRegistry(Mapping[Provider, ProviderPort]):
    """Ports by provider (read-only mapping). Providers without credentials are simply absent."""

    def __init__(self, ports: Mapping[Provider, ProviderPort] | None = None) -> None:
        self._ports: dict[Provider, ProviderPort] = dict(ports or {})

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[Provider | str, ProviderCredentials], **options: Any
    ) -> ProviderRegistry:
        """One port per entry of `credentials`."""
        return cls({Provider(p): build_port(p, c, **options) for p, c in credentials.items()})

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, timeout_s: float = 60, **options: Any
    ) -> ProviderRegistry:
        """Ports for the providers whose key is set: OPENAI_API_KEY / OPENAI_BASE_URL,
        ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL (in the settings, or in `environ` when given)."""
        env = load_settings().provider_environ if environ is None else environ
        credentials = {
            provider: ProviderCredentials(env[key_name], env.get(url_name) or None, timeout_s=timeout_s)
            for provider, (key_name, url_name) in ENV_NAMES.items()
            if env.get(key_name)
        }
        return cls.from_credentials(credentials, **options)

    def __getitem__(self, provider: Provider | str) -> ProviderPort:
        try:
            return self._ports[Provider(provider)]
        except (KeyError, ValueError):
            raise KeyError(f"no provider port configured for {provider!r}") from None

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._ports)

    def __len__(self) -> int:
        return len(self._ports)

    def __repr__(self) -> str:
        return f"ProviderRegistry({list(self._ports.values())!r})"

    def close(self) -> None:
        """Close every port."""
        for port in self._ports.values():
            port.close()
