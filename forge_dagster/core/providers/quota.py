"""Quota recovery: pause a provider key whose quota or credit ran out, probe it back into service with
a call that spends nothing, at growing intervals; hold batch submission for a model whose enqueued
tokens hit the provider's limit until its in-flight batches drain. Both paths use it: the realtime
executor, and the batch builder through `KeyPorts` (the ports of every key) and `BatchGate` (which keys
may submit now, which models are held).

The probe lists the provider's models: it proves the key is accepted again (auth, billing block lifted)
without spending a token. It cannot prove that credit is back: OpenAI and Anthropic both list models for
a key whose quota or credit balance is exhausted, and no zero-spend call reports the balance. So a
resumed key is on trial: if the first real call (a realtime request, a batch create) meets the same wall,
the key is paused again and the next probe waits twice as long (`probe_count` keeps rising until a real
call succeeds, which ends the episode). The simulator answers the probe the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forge_dagster.core.batch.shaping import GroupKey
from forge_dagster.core.models import ErrorClass, Provider, ProviderError
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.providers.base import ProviderCredentials, ProviderPort
from forge_dagster.core.providers.errors import classify
from forge_dagster.core.providers.key_router import KeyRouter
from forge_dagster.core.providers.keyring import KeyRing, ProviderKey
from forge_dagster.core.secrets import scrub
from forge_dagster.core.store import ClaimedJob, ForgeStore
from forge_dagster.core.store.key_store import PauseResult

log = logging.getLogger(__name__)

PAUSING_ERRORS = frozenset({ErrorClass.QUOTA_EXHAUSTED, ErrorClass.AUTH})
TOKEN_LIMIT_CODES = ("token_limit_exceeded", "enqueued token limit")


@dataclass(frozen=True)
class PausePolicy:
    """How long a paused key waits for its probes: base * 2^probes, capped."""

    base_s: float = 60.0
    cap_s: float = 3600.0
    probe_budget_s: float = 30.0  # a claimed probe is not retried by anyone else for this long
    probe_timeout_s: float = 10.0
    hold_recheck_s: float = 60.0  # batch jobs of a held model are looked at again after this long


@dataclass
class ProbeReport:
    probed: int = 0
    resumed: list[str] = field(default_factory=list)
    still_paused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def pauses_key(error: ProviderError) -> bool:
    """Quota or credit exhausted, or the key refused: the key stops, its jobs wait."""
    return error.error_class in PAUSING_ERRORS


def pause_key(
    store: ForgeStore, key: ProviderKey, error: ProviderError, policy: PausePolicy,
) -> PauseResult:
    """Pause `key` for `error` (writes key.paused, and provider.all_keys_paused once per outage)."""
    reason = f"{error.error_class}: {error.message}"
    result = store.keys.pause(str(key.provider), key.alias, reason, base_s=policy.base_s, cap_s=policy.cap_s,
                              min_s=error.retry_after_s or 0.0)
    if result.paused:
        log.warning("key %s paused until %s: %s", key.name, result.until, reason)
    return result


@contextmanager
def _sdk_client(provider: Provider, creds: ProviderCredentials, timeout_s: float) -> Iterator[Any]:
    """A short-lived official client for one call outside the port, with the SDK's own retries off."""
    kwargs = {"api_key": creds.get_secret_value(), "base_url": creds.base_url, "timeout": timeout_s,
              "max_retries": 0}
    if provider == Provider.OPENAI:
        import openai

        with openai.OpenAI(**kwargs) as client:
            yield client
    else:
        import anthropic

        with anthropic.Anthropic(**kwargs) as client:
            yield client


def probe_key(key: ProviderKey, *, timeout_s: float = 10.0) -> None:
    """A call that spends nothing (list the models); raises a classified ProviderError on failure."""
    try:
        with _sdk_client(key.provider, key.credentials, timeout_s) as client:
            if key.provider == Provider.OPENAI:
                client.models.list()
            else:
                client.models.list(limit=1)
    except Exception as exc:
        raise classify(exc) from exc


def probe_due_keys(store: ForgeStore, ring: KeyRing, policy: PausePolicy | None = None) -> ProbeReport:
    """Probe every paused key whose time has come (claimed, so no key is probed twice at once) and
    resume those that answer; the others wait twice as long."""
    policy = policy or PausePolicy()
    report = ProbeReport()
    for row in store.keys.claim_due_probes(budget_s=policy.probe_budget_s):
        key = ring.get(row["provider"], row["alias"])
        name = f"{row['provider']}:{row['alias']}"
        if key is None:  # configured in another process: that one probes it after the budget
            continue
        report.probed += 1
        try:
            probe_key(key, timeout_s=policy.probe_timeout_s)
        except ProviderError as exc:
            store.keys.probe_failed(key.provider, key.alias, f"{exc.error_class}: {exc.message}",
                                    base_s=policy.base_s, cap_s=policy.cap_s)
            report.still_paused.append(name)
            report.errors.append(f"{name}: {exc.error_class}: {exc.message}")
            continue
        if store.keys.resume(str(key.provider), key.alias):
            report.resumed.append(name)
            log.info("key %s resumed after probe %d", name, row["probe_count"] + 1)
    return report


# -- batch: enqueued-token limits ----------------------------------------------------------------
def is_enqueued_token_limit(error: ProviderError | str) -> bool:
    """The provider refused a batch because too many tokens are already enqueued for the model."""
    text = (error.message if isinstance(error, ProviderError) else str(error)).lower()
    return any(code in text for code in TOKEN_LIMIT_CODES)


def hold_for_token_limit(store: ForgeStore, provider: Provider | str, model: str, error: ProviderError | str) -> bool:
    """Hold batch submission for `model` until its in-flight batches drain (instead of failing jobs).
    True when the hold is new."""
    reason = error.message if isinstance(error, ProviderError) else str(error)
    held = store.keys.hold_submissions(str(provider), model, reason)
    if held:
        log.warning("batch submission for %s/%s held until in-flight batches drain: %s", provider, model, reason)
    return held


def release_drained_holds(store: ForgeStore) -> list[tuple[str, str]]:
    """End the holds of models with nothing in flight any more."""
    return store.keys.release_drained_holds()


def provider_batch_errors(port: ProviderPort, provider_batch_id: str, *, timeout_s: float = 10.0) -> str:
    """Why the provider failed a whole batch (OpenAI's `errors.data`: code and message), as one text; ''
    when it gave no reason (Anthropic batches do not fail as a whole). Spends nothing."""
    if port.provider != Provider.OPENAI:
        return ""
    try:
        with _sdk_client(port.provider, port.credentials, timeout_s) as client:
            errors = client.batches.retrieve(provider_batch_id).errors
    except Exception as exc:
        raise classify(exc) from exc
    return scrub("; ".join(f"{e.code}: {e.message}" for e in (errors.data if errors and errors.data else [])))


# -- batch: which key submits --------------------------------------------------------------------
def port_key(port: ProviderPort) -> ProviderKey:
    """The key behind a port, under the alias its credentials carry."""
    return ProviderKey(port.provider, port.credentials.alias, port.credentials)


class KeyPorts(Mapping[Provider, ProviderPort]):
    """Ports for batch work, one per provider key. As a mapping it gives each provider's first key (for
    code that knows one port per provider); `candidates` are the keys a processor's batches may go out
    with, first choice first; `for_batch` is the port of the key a batch went out with, since a provider
    batch is visible only to its key's organization or project."""

    def __init__(self, ring: KeyRing, given: Mapping[str, ProviderPort] | None = None) -> None:
        self.ring = ring
        self._given = dict(given or {})  # key name -> a port handed in (see `of`)

    @classmethod
    def of(cls, ports: Mapping[Provider, ProviderPort]) -> KeyPorts:
        """`ports` if it is a KeyPorts already; else one key per port, under its credentials' alias."""
        if isinstance(ports, KeyPorts):
            return ports
        given = {port_key(port).name: port for port in ports.values()}
        return cls(KeyRing([port_key(port) for port in ports.values()]), given)

    def __getitem__(self, provider: Provider | str) -> ProviderPort:
        keys = self.ring.for_provider(provider)
        if not keys:
            raise KeyError(f"no provider key configured for {provider!r}")
        return self.port(keys[0])

    def __iter__(self) -> Iterator[Provider]:
        return iter(dict.fromkeys(k.provider for k in self.ring.keys))

    def __len__(self) -> int:
        return len({k.provider for k in self.ring.keys})

    def port(self, key: ProviderKey) -> ProviderPort:
        return self._given.get(key.name) or self.ring.port(key)

    def for_batch(self, provider: Provider | str, alias: str | None) -> ProviderPort:
        """The port of the key `alias` of `provider`; the provider's first key when unknown here."""
        key = self.ring.get(provider, alias) if alias else None
        return self.port(key) if key is not None else self[provider]

    def candidates(self, processor: Processor) -> list[ProviderKey]:
        """The keys a processor's batches may use, first choice first: the keys it lists (fallbacks), or
        every key of its provider. Ports handed in one per provider serve every processor."""
        if processor.keys and not self._given:
            listed = (self.ring.get(processor.provider, alias) for alias in processor.keys)
            return [k for k in listed if k is not None]
        return self.ring.for_provider(processor.provider)

    def close(self) -> None:
        self.ring.close()


def batch_port(store: ForgeStore, ports: Mapping[Provider, ProviderPort], batch: Mapping[str, Any]) -> ProviderPort:
    """The port of the key `batch` (a batch row) was submitted with."""
    alias = store.keys.batch_keys([batch["id"]]).get(batch["id"])
    return KeyPorts.of(ports).for_batch(batch["provider"], alias)


def pause_port_key(store: ForgeStore, port: ProviderPort, error: ProviderError, policy: PausePolicy) -> float:
    """Pause the key behind `port` for `error` (registering it first, so a key the store has not seen is
    paused too); returns the seconds until its next probe."""
    key = port_key(port)
    store.keys.register([key.record()])
    result = pause_key(store, key, error, policy)
    until = result.until
    if until is None:  # paused already by someone else: wait for that pause's probe
        row = store.keys.get(str(key.provider), key.alias)
        until = row["paused_until"] if row else None
    return _seconds_until(until, policy.base_s)


def _seconds_until(when: datetime | None, default_s: float, floor_s: float = 0.05) -> float:
    return default_s if when is None else max(floor_s, (when - datetime.now(UTC)).total_seconds())


@dataclass
class Waiting:
    """Claimed batch jobs that cannot be submitted now: back to pending without spending an attempt."""

    jobs: list[tuple[ClaimedJob, str, float]] = field(default_factory=list)  # (job, reason, delay_s)
    messages: list[str] = field(default_factory=list)


class BatchGate:
    """One builder pass's view of what may be submitted: the keys' states from the store (paused keys
    are skipped) and the models whose submission is held for their enqueued-token limit."""

    def __init__(self, store: ForgeStore, keys: KeyPorts, policy: PausePolicy | None = None) -> None:
        self.store, self.keys, self.policy = store, keys, policy or PausePolicy()
        self.router = KeyRouter(keys.ring)
        store.keys.register(keys.ring.records())
        self.refresh()

    def refresh(self) -> None:
        """Read the keys' states and the holds again (after a submission paused a key)."""
        self.router.update(self.store.keys.all())
        self.holds = {(h["provider"], h["model"]): h["reason"] for h in self.store.keys.holds()}

    def choices(self, processor: Processor) -> list[ProviderKey]:
        """The active keys a processor's batch may be submitted with, first choice first."""
        return [k for k in self.keys.candidates(processor) if self.router.active(k)]

    def wait(self, processor: Processor) -> tuple[str, float] | None:
        """(reason, delay_s) when a processor's batch jobs must wait now; None when they may go."""
        held = self.holds.get((str(processor.provider), processor.model))
        if held is not None:
            return (f"waiting: batch submission for {processor.provider} {processor.model} is held until its "
                    f"in-flight batches end ({held})"[:500], self.policy.hold_recheck_s)
        keys = self.keys.candidates(processor)
        if keys and not self.choices(processor):
            rows = [self.router.row(k) for k in keys]
            next_probe = min((r["paused_until"] for r in rows if r and r.get("paused_until")), default=None)
            return (f"waiting: every {processor.provider} key for {processor.name} is paused",
                    _seconds_until(next_probe, self.policy.base_s))
        return None

    def split(
        self, items: Sequence[tuple[GroupKey, Any]], jobs_by_custom_id: Mapping[str, ClaimedJob],
        catalog: ProcessorCatalog,
    ) -> tuple[list[tuple[GroupKey, Any]], Waiting]:
        """Rendered (group key, request) items that may be submitted now, and the jobs that must wait."""
        admitted, waiting, counts = [], Waiting(), {}
        for key, request in items:
            verdict = self.wait(catalog.get_version(key.processor_name, key.processor_version))
            if verdict is None:
                admitted.append((key, request))
                continue
            reason, delay = verdict
            waiting.jobs.append((jobs_by_custom_id[request.custom_id], reason, delay))
            counts[reason] = counts.get(reason, 0) + 1
        waiting.messages = [f"{n} jobs {reason}" for reason, n in counts.items()]
        return admitted, waiting
