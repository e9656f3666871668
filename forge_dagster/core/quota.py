"""Quota recovery: pause a provider key whose quota or credit ran out, probe it back into service with
a call that spends nothing, at growing intervals; hold batch submission for a model whose enqueued
tokens hit the provider's limit until its in-flight batches drain.

The probe lists the provider's models: it proves the key is accepted again (auth, billing block lifted)
without spending a token. Providers do not say whether credit is back without spending some, so a
resumed key is on trial: if the first real call meets the same wall, the key is paused again and the
next probe waits twice as long (`probe_count` keeps rising until a real call succeeds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from forge_dagster.core.models import ErrorClass, Provider, ProviderError
from forge_dagster.core.providers.errors import classify
from forge_dagster.core.store import LeaseStore
from forge_dagster.core.store.key_store import PauseResult

if TYPE_CHECKING:  # the realtime package imports this module
    from forge_dagster.core.realtime.keyring import KeyRing, ProviderKey

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
    store: LeaseStore, key: ProviderKey, error: ProviderError, policy: PausePolicy,
) -> PauseResult:
    """Pause `key` for `error` (writes key.paused, and provider.all_keys_paused once per outage)."""
    reason = f"{error.error_class}: {error.message}"
    result = store.keys.pause(str(key.provider), key.alias, reason, base_s=policy.base_s, cap_s=policy.cap_s,
                              min_s=error.retry_after_s or 0.0)
    if result.paused:
        log.warning("key %s paused until %s: %s", key.name, result.until, reason)
    return result


def probe_key(key: ProviderKey, *, timeout_s: float = 10.0) -> None:
    """A call that spends nothing (list the models); raises a classified ProviderError on failure."""
    creds = key.credentials
    kwargs = {"api_key": creds.get_secret_value(), "base_url": creds.base_url, "timeout": timeout_s,
              "max_retries": 0}
    try:
        if key.provider == Provider.OPENAI:
            import openai

            with openai.OpenAI(**kwargs) as client:
                client.models.list()
        else:
            import anthropic

            with anthropic.Anthropic(**kwargs) as client:
                client.models.list(limit=1)
    except Exception as exc:
        raise classify(exc) from exc


def probe_due_keys(store: LeaseStore, ring: KeyRing, policy: PausePolicy | None = None) -> ProbeReport:
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


def hold_for_token_limit(store: LeaseStore, provider: Provider | str, model: str, error: ProviderError | str) -> bool:
    """Hold batch submission for `model` until its in-flight batches drain (instead of failing jobs).
    True when the hold is new."""
    reason = error.message if isinstance(error, ProviderError) else str(error)
    held = store.keys.hold_submissions(str(provider), model, reason)
    if held:
        log.warning("batch submission for %s/%s held until in-flight batches drain: %s", provider, model, reason)
    return held


def held_models(store: LeaseStore) -> set[tuple[str, str]]:
    """(provider, model) pairs whose batch submission is held now."""
    return {(h["provider"], h["model"]) for h in store.keys.holds()}


def release_drained_holds(store: LeaseStore) -> list[tuple[str, str]]:
    """End the holds of models with nothing in flight any more."""
    return store.keys.release_drained_holds()
