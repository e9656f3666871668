"""Provider keys from the environment, each with its own port and rate limiter (paced alone, or on the
key's schedule in the store, shared by every process: `KeyRing.share_pacing`).

Where keys come from (documented in docs/realtime.md):
- `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`: alias `primary`, with `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`.
- `OPENAI_API_KEY_<NAME>` / `ANTHROPIC_API_KEY_<NAME>`: more keys, alias `<name>` in lower case
  (e.g. `OPENAI_API_KEY_2` -> alias `2`, `OPENAI_API_KEY_BACKUP` -> `backup`).
- `FORGE_PROVIDER_KEYS`: a JSON list of `{"provider", "alias", "env"}` (the name of the variable that
  holds the key) with optional `"base_url"`, `"rpm"`, `"tpm"`.
- Limits per key: `OPENAI_RPM`, `OPENAI_TPM` (every OpenAI key), `OPENAI_RPM_<NAME>` for one key; the
  same with `ANTHROPIC_`. Unset: the limits come from the provider's headers.
- No key at all: one simulator key per provider (alias `simulator`) at `FORGE_SIMULATOR_URL`.
Keys live in memory only; the store sees an alias, a masked form and a sha256 prefix.

Transport: the SDKs' async clients run on their aiohttp transport (`DefaultAioHttpClient`, the SDKs'
`aiohttp` extra), which costs less CPU per call than their default httpx pool; httpx where the extra is
missing, or when asked (`KeyRing(transport="httpx")`).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forge_dagster.core.config import load_settings
from forge_dagster.core.models import Provider
from forge_dagster.core.providers.base import ProviderCredentials, ProviderPort
from forge_dagster.core.providers.ratelimit import KeyLimiter
from forge_dagster.core.providers.registry import PORT_CLASSES
from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.key_store import KeyRecord

log = logging.getLogger(__name__)

SIMULATOR_KEY = "sim-no-key"  # the key sent to the simulator when no provider key is set
SIMULATOR_ALIAS = "simulator"
DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8700"
_PREFIX = {Provider.OPENAI: "OPENAI", Provider.ANTHROPIC: "ANTHROPIC"}
TRANSPORTS = ("auto", "aiohttp", "httpx")
_SDK = {Provider.OPENAI: ("openai", "AsyncOpenAI"), Provider.ANTHROPIC: ("anthropic", "AsyncAnthropic")}


def fingerprint(secret: str) -> str:
    """The first 16 hex digits of the key's sha256: tells keys apart without revealing them."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProviderKey:
    """One API key of one provider, under an alias, with its configured limits."""

    provider: Provider
    alias: str
    credentials: ProviderCredentials
    rpm: int | None = None
    tpm: int | None = None

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.alias}"

    def record(self) -> KeyRecord:
        """What the store keeps about this key (never the key)."""
        secret = self.credentials.get_secret_value()
        return KeyRecord(str(self.provider), self.alias, self.credentials.masked_key, fingerprint(secret))


def _limit(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    return int(value) if value not in (None, "") and int(value) > 0 else None


def keys_from_env(
    environ: Mapping[str, str] | None = None, *, simulator_url: str | None = None, timeout_s: float = 60.0,
) -> list[ProviderKey]:
    """Every provider key `environ` names (default: the settings' `provider_environ`; see the module
    docstring); the simulator's when none."""
    env = load_settings().provider_environ if environ is None else environ
    found: dict[tuple[Provider, str], ProviderKey] = {}

    def add(provider: Provider, alias: str, secret: str, base_url: str | None, suffix: str = "") -> None:
        prefix = _PREFIX[provider]
        rpm = _limit(env, f"{prefix}_RPM{suffix}") or _limit(env, f"{prefix}_RPM")
        tpm = _limit(env, f"{prefix}_TPM{suffix}") or _limit(env, f"{prefix}_TPM")
        creds = ProviderCredentials(secret, base_url, alias=alias, timeout_s=timeout_s)
        found[(provider, alias)] = ProviderKey(provider, alias, creds, rpm, tpm)

    for provider, prefix in _PREFIX.items():
        base = env.get(f"{prefix}_BASE_URL") or None
        if env.get(f"{prefix}_API_KEY"):
            add(provider, "primary", env[f"{prefix}_API_KEY"], base)
        for name, value in sorted(env.items()):
            if name.startswith(f"{prefix}_API_KEY_") and value:
                suffix = name.removeprefix(f"{prefix}_API_KEY")
                add(provider, suffix[1:].lower(), value, env.get(f"{prefix}_BASE_URL{suffix}") or base, suffix)
    for entry in json.loads(env.get("FORGE_PROVIDER_KEYS") or "[]"):
        provider, alias = Provider(entry["provider"]), str(entry["alias"])
        secret = env.get(entry["env"], "")
        if not secret:
            raise ValueError(f"FORGE_PROVIDER_KEYS: {provider}/{alias} names {entry['env']}, which is not set")
        creds = ProviderCredentials(secret, entry.get("base_url") or env.get(f"{_PREFIX[provider]}_BASE_URL"),
                                    alias=alias, timeout_s=timeout_s)
        found[(provider, alias)] = ProviderKey(provider, alias, creds, entry.get("rpm"), entry.get("tpm"))
    if found:
        return list(found.values())
    sim = (simulator_url or env.get("FORGE_SIMULATOR_URL") or DEFAULT_SIMULATOR_URL).rstrip("/")
    return [
        ProviderKey(p, SIMULATOR_ALIAS, ProviderCredentials(SIMULATOR_KEY, sim + suffix, alias=SIMULATOR_ALIAS,
                                                            timeout_s=timeout_s),
                    _limit(env, f"{_PREFIX[p]}_RPM"), _limit(env, f"{_PREFIX[p]}_TPM"))
        for p, suffix in ((Provider.OPENAI, "/v1"), (Provider.ANTHROPIC, ""))
    ]


def aiohttp_available() -> bool:
    """Whether the SDKs' aiohttp transport is installed (the `aiohttp` extra of `openai` / `anthropic`)."""
    return importlib.util.find_spec("aiohttp") is not None


def _transport(choice: str) -> str:
    """"aiohttp" or "httpx" for `choice` ("auto": aiohttp when installed)."""
    if choice not in TRANSPORTS:
        raise ValueError(f"transport {choice!r}: one of {', '.join(TRANSPORTS)}")
    if choice == "auto":
        return "aiohttp" if aiohttp_available() else "httpx"
    return choice


def _observed_port(key: ProviderKey, limiter: KeyLimiter, transport: str = "auto") -> ProviderPort:
    """The key's port, whose async client (on `transport`) reports every response's headers to the key's
    limiter."""
    module, name = PORT_CLASSES[key.provider].split(":")
    base: type[ProviderPort] = getattr(importlib.import_module(module), name)
    sdk = importlib.import_module(_SDK[key.provider][0])
    sdk_client = getattr(sdk, _SDK[key.provider][1])
    http_client = sdk.DefaultAioHttpClient if _transport(transport) == "aiohttp" else sdk.DefaultAsyncHttpxClient

    async def on_response(response: Any) -> None:
        limiter.observe(response.headers)

    class ObservedPort(base):  # type: ignore[misc, valid-type]
        def _new_async_client(self) -> Any:
            http = http_client(event_hooks={"response": [on_response]})
            return sdk_client(**self._client_kwargs(), http_client=http)

    ObservedPort.__name__ = f"Observed{base.__name__}"
    return ObservedPort(key.credentials)


class KeyRing:
    """The keys this process may use, with one port and one limiter per key."""

    def __init__(self, keys: list[ProviderKey], *, headroom: float = 0.97, transport: str = "auto") -> None:
        if len({(k.provider, k.alias) for k in keys}) != len(keys):
            raise ValueError("two keys share a provider and alias")
        self.transport = _transport(transport)
        self.keys = list(keys)
        self.limiters = {k.name: KeyLimiter(k.rpm, k.tpm, headroom=headroom) for k in keys}
        self._ports: dict[str, ProviderPort] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> KeyRing:
        return cls(keys_from_env(environ, **options))

    def for_provider(self, provider: Provider | str) -> list[ProviderKey]:
        return [k for k in self.keys if k.provider == Provider(provider)]

    def get(self, provider: Provider | str, alias: str) -> ProviderKey | None:
        return next((k for k in self.keys if k.provider == Provider(provider) and k.alias == alias), None)

    def limiter(self, key: ProviderKey) -> KeyLimiter:
        return self.limiters[key.name]

    def admission_room(self, horizon_s: float) -> int | None:
        """How many more calls the keys' limiters admit within `horizon_s` beyond those waiting for a slot
        now (None: some key has no request limit known, so the limiters set no bound)."""
        rates = [limiter.rate_per_s() for limiter in self.limiters.values()]
        if not rates or any(rate is None for rate in rates):
            return None
        admitted = sum(math.ceil(rate * horizon_s) for rate in rates if rate is not None)
        return admitted - sum(limiter.waiting for limiter in self.limiters.values())

    def share_pacing(self, store: ForgeStore) -> None:
        """Pace every key on its schedule in `store`, shared with every other process that calls with
        the same key (see store/pacing_store.py); without this, each limiter paces this process alone."""
        for key in self.keys:
            record = key.record()
            schedule = store.pacing.schedule(record.provider, record.fingerprint)
            schedule.ensure(key.rpm, key.tpm)
            self.limiters[key.name].share(schedule)

    def port(self, key: ProviderKey) -> ProviderPort:
        """The key's port (built on first use, which imports the provider's SDK: seconds, so call it off
        the event loop the first time, see `built`)."""
        with self._lock:
            port = self._ports.get(key.name)
            if port is None:
                port = self._ports[key.name] = _observed_port(key, self.limiters[key.name], self.transport)
            return port

    def built(self, key: ProviderKey) -> ProviderPort | None:
        """The key's port if it was built already."""
        return self._ports.get(key.name)

    def records(self) -> list[KeyRecord]:
        return [k.record() for k in self.keys]

    async def aclose(self) -> None:
        for limiter in self.limiters.values():  # slots reserved ahead go back to the other processes
            try:
                await asyncio.to_thread(limiter.give_back)
            except Exception:  # the store may be away: those slots pass unused
                log.warning("could not give back reserved slots", exc_info=True)
        for port in self._ports.values():
            await port.aclose()
        self._ports.clear()

    def close(self) -> None:
        for port in self._ports.values():
            port.close()
        self._ports.clear()
