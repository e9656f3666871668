"""Realtime execution: jobs whose processor runs `realtime` are claimed from the lease store and called
concurrently on asyncio through the provider ports, within each key's rate limits, validated like batch
results (fail closed), with quota recovery for paused keys.

`RealtimeExecutor` (executor.py) is the worker; `KeyRing` (keyring.py) the keys from the environment;
`KeyRouter` (routing.py) picks a key; `JobCall` (calls.py) runs one job; recording.py writes outcomes.
"""

from forge_dagster.core.providers.keyring import KeyRing, ProviderKey, keys_from_env
from forge_dagster.core.realtime.executor import RealtimeConfig, RealtimeExecutor
from forge_dagster.core.realtime.recording import RealtimeStats
from forge_dagster.core.realtime.routing import auto_mode, estimate_tokens

__all__ = ["KeyRing", "ProviderKey", "RealtimeConfig", "RealtimeExecutor", "RealtimeStats", "auto_mode",
           "estimate_tokens", "keys_from_env"]
