"""Provider ports (OpenAI Batch / Anthropic Message Batches / realtime) behind one interface.

Names are imported on first use, so `wire` or `limits` can be used without loading both SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forge_dagster.core.providers.anthropic_port import AnthropicPort
    from forge_dagster.core.providers.base import BatchNotEndedError, ProviderCredentials, ProviderPort
    from forge_dagster.core.providers.errors import classify, classify_error_object, classify_status
    from forge_dagster.core.providers.limits import BatchLimitError, check_limits
    from forge_dagster.core.providers.openai_port import OpenAIPort
    from forge_dagster.core.providers.registry import ProviderRegistry, build_port

_EXPORTS = {
    "AnthropicPort": "anthropic_port",
    "BatchLimitError": "limits",
    "BatchNotEndedError": "base",
    "OpenAIPort": "openai_port",
    "ProviderCredentials": "base",
    "ProviderPort": "base",
    "ProviderRegistry": "registry",
    "build_port": "registry",
    "check_limits": "limits",
    "classify": "errors",
    "classify_error_object": "errors",
    "classify_status": "errors",
}
__all__ = [
    "AnthropicPort",
    "BatchLimitError",
    "BatchNotEndedError",
    "OpenAIPort",
    "ProviderCredentials",
    "ProviderPort",
    "ProviderRegistry",
    "build_port",
    "check_limits",
    "classify",
    "classify_error_object",
    "classify_status",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
