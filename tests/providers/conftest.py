"""Fixtures for the provider-port tests: one simulator per session, reset and reconfigured to "no fault"
before each test, and ports built on the real SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forge_dagster.core.models import Provider
from forge_dagster.core.providers import ProviderPort
from forge_dagster.simulator import SimConfig, Simulator

from .helpers import make_port


@pytest.fixture(scope="session")
def simulator() -> Iterator[Simulator]:
    sim = Simulator(seed=0, port=0).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    """The session simulator with no batches, no log and every knob back at its default."""
    simulator.reset()
    simulator.configure(**SimConfig().to_dict())
    return simulator


@pytest.fixture(params=[Provider.OPENAI, Provider.ANTHROPIC], ids=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param


@pytest.fixture
def port(sim: Simulator, provider: Provider) -> Iterator[ProviderPort]:
    """A port for the parametrised provider."""
    made = make_port(sim, provider)
    yield made
    made.close()


@pytest.fixture
def openai_port(sim: Simulator) -> Iterator[ProviderPort]:
    made = make_port(sim, Provider.OPENAI)
    yield made
    made.close()


@pytest.fixture
def anthropic_port(sim: Simulator) -> Iterator[ProviderPort]:
    made = make_port(sim, Provider.ANTHROPIC)
    yield made
    made.close()
