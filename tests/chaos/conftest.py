"""Fixtures for the chaos suite: the simulator as a process of its own (workers are processes too, and a
provider is not in the test's interpreter), a FORGE_HOME for the forge processes, fresh schemas."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import SimulatorProcess, store_schema


@pytest.fixture(scope="module")
def sim_process() -> Iterator[SimulatorProcess]:
    proc = SimulatorProcess(seed=0)
    yield proc
    proc.stop()


@pytest.fixture
def remote_sim(sim_process: SimulatorProcess) -> SimulatorProcess:
    """The out-of-process simulator with every knob at its fault-free default and an empty log."""
    sim_process.reset()
    return sim_process


@pytest.fixture(scope="module")
def chaos_home() -> Iterator[Path]:
    """FORGE_HOME of the forge processes a chaos test starts (relay state, Dagster home)."""
    with tempfile.TemporaryDirectory(prefix="forge-chaos-home-", ignore_cleanup_errors=True) as home:
        yield Path(home)


@pytest.fixture
def chaos_schema(database_url: str) -> Iterator[str]:
    with store_schema(database_url) as name:
        yield name
