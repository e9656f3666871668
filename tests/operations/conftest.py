"""Fixtures for the operations tests: a real HTTP receiver and relays pointed at it."""

from __future__ import annotations

import pytest

from forge_dagster.core.ops.relay import Relay, build_relay
from tests.operations.receiver import Receiver

SECRET = "test-callback-secret-0123456789"


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def make_relay(tmp_path):
    """make_relay(store, webhook=url or None, allow=...) -> a relay with fast backoff (closed after the test).
    The receiver listens on 127.0.0.1, which the callback policy refuses by default: these relays open it
    (`FORGE_CALLBACK_ALLOW`, `allow`) unless a test says otherwise (`allow=None` is the default policy)."""
    relays: list[Relay] = []

    def make(store, *, webhook: str | None = None, base_delay_s: float = 0.05, allow: str | None = "127.0.0.1",
             environ: dict[str, str] | None = None, **kwargs) -> Relay:
        env = {"FORGE_CALLBACK_ALLOW": allow} if allow else {}
        relay = build_relay(store, forge_home=tmp_path, environ={**env, **(environ or {})}, slack_webhook_url=webhook,
                            callback_secret=SECRET, base_delay_s=base_delay_s, **kwargs)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.close()


@pytest.fixture
def catalog(store):
    """The registry's catalog of the test's store (the packaged processors registered), as the pipeline reads it."""
    from forge_dagster.core.platform.registry import load_catalog

    return load_catalog(store)


@pytest.fixture
def ports(sim):
    from forge_dagster.resources.provider_keys import ProviderKeysResource

    return ProviderKeysResource(simulator_url=sim.url).ports




def ticket_specs(n: int, *, callback_url: str | None = None, prefix: str = "t"):
    from forge_dagster.core.store import JobSpec

    return [JobSpec("ticket_triage", {"subject": f"Ticket {i}", "body": "The export button does nothing."},
                    external_id=f"{prefix}{i}", processor_version="1.0.0",
                    callback_url=f"{callback_url}/{i}" if callback_url else None) for i in range(n)]
