"""Fixtures for the provider-port tests: ports built on the real SDK clients pointed at the session
simulator (the `sim` fixture of tests/conftest.py, reset to "no fault" before each test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from forge_dagster.core.models import Provider
from forge_dagster.core.providers import ProviderPort
from forge_dagster.simulator import Simulator

from .helpers import make_port


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
