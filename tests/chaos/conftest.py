"""Fixtures for the chaos suite: the simulator as a process of its own (workers are processes too, and a
provider is not in the test's interpreter), a FORGE_HOME for the forge processes, fresh schemas."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from forge_dagster.core.store import ForgeStore
from tests.chaos.harness import store_schema
from tests.pipeline.conftest import catalog, ports, resources  # noqa: F401 - the Dagster-run scenarios use them


@pytest.fixture(scope="module")
def chaos_home() -> Iterator[Path]:
    """FORGE_HOME of the forge processes a chaos test starts (relay state, Dagster home)."""
    with tempfile.TemporaryDirectory(prefix="forge-chaos-home-", ignore_cleanup_errors=True) as home:
        yield Path(home)


@pytest.fixture
def chaos_schema(database_url: str) -> Iterator[str]:
    with store_schema(database_url) as name:
        yield name


@pytest.fixture(scope="module")
def module_schema(database_url: str) -> Iterator[str]:
    with store_schema(database_url) as name:
        yield name


@pytest.fixture
def emptied_store(database_url: str, module_schema: str) -> Iterator[ForgeStore]:
    """A store on the module's schema with every table of work emptied first: a fresh store for each
    scenario, cheaper than migrating a schema for each. The processor registry (configuration) is kept."""
    with ForgeStore(database_url, module_schema, lease_ttl_s=30, pool_size=6) as store:
        with store.transaction() as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename NOT IN ('schema_version', 'processors', 'processor_events')")]
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
        yield store
