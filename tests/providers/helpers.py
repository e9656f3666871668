"""Helpers for the provider-port tests: fake keys, port construction, batches, bounded waits."""

from __future__ import annotations

import itertools
import time
from typing import Any

from forge_dagster.core.models import BatchSpec, BatchStatus, Provider, ProviderRequest
from forge_dagster.core.providers import ProviderCredentials, ProviderPort, build_port
from forge_dagster.simulator import Simulator
from tests.helpers import wait_until

# Recognisable fake keys: tests assert these never leak into logs, messages or the simulator's log.
OPENAI_TEST_KEY = "sk-proj-forgetest-OPENAI-7f3a9c2e1b8d4f60a5e7"
ANTHROPIC_TEST_KEY = "sk-ant-api03-forgetest-ANTHROPIC-4c1e8b7a2d9f"
TEST_KEYS = {Provider.OPENAI: OPENAI_TEST_KEY, Provider.ANTHROPIC: ANTHROPIC_TEST_KEY}
MODELS = {Provider.OPENAI: "gpt-4o-mini", Provider.ANTHROPIC: "claude-haiku-4-5"}
DEADLINE_S = 10.0

_batch_numbers = itertools.count(1)


def base_url(sim: Simulator, provider: Provider) -> str:
    return sim.openai_base_url if provider == Provider.OPENAI else sim.anthropic_base_url


def make_port(sim: Simulator, provider: Provider, **options: Any) -> ProviderPort:
    """A port on the real SDK client for `provider`, pointed at the simulator."""
    credentials = ProviderCredentials(TEST_KEYS[provider], base_url(sim, provider), timeout_s=10)
    options.setdefault("reconcile_delay_s", 0.05)
    return build_port(provider, credentials, **options)


def request_body(provider: Provider, prompt: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODELS[provider],
        "max_tokens": 400,
        "messages": [{"role": "user", "content": prompt}],
    }
    body.update(extra)
    return body


def make_batch(
    provider: Provider, n: int = 3, *, prompt: str = "Say something about item", **extra: Any
) -> BatchSpec:
    """A batch of `n` requests with custom_ids `item-0..n-1`; prompt i is longer than prompt i-1, so the
    input token counts identify which request a result belongs to."""
    number = next(_batch_numbers)
    requests = [
        ProviderRequest(
            f"item-{i}", request_body(provider, f"{prompt} {i}. " + "detail " * (40 * i), **extra)
        )
        for i in range(n)
    ]
    return BatchSpec(f"fb-{number:04d}-{time.time_ns() % 10**9}", provider, MODELS[provider], requests)


def wait_until_ended(port: ProviderPort, provider_batch_id: str) -> BatchStatus:
    """The batch's status once it has ended (bounded by DEADLINE_S)."""

    def ended() -> BatchStatus | None:
        status = port.status(provider_batch_id)
        return status if status.ended else None

    return wait_until(ended, timeout_s=DEADLINE_S, what=f"batch {provider_batch_id} to end")


def routes(sim: Simulator) -> list[str]:
    """`METHOD /path` of every logged provider request, in order."""
    return [f"{e['method']} {e['path']}" for e in sim.requests()]
