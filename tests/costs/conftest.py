"""Fixtures for the cost levers: processors with a long shared system prompt (long enough for the
providers' prompt caches), the registry on a test schema, and provider ports on the simulator."""

from __future__ import annotations

import psycopg
import pytest

from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.resources.provider_keys import ProviderKeysResource
from tests.platform.conftest import example, forge_cli, write_processor  # noqa: F401 (a fixture)

# About 1,400 tokens by the simulator's count: over the 1,024-token minimum a prompt cache keeps.
LONG_SYSTEM = "You analyse customer product reviews.\n" + "Follow the house style guide to the letter. " * 130


@pytest.fixture
def ports(sim):
    return ProviderKeysResource(simulator_url=sim.url).ports


@pytest.fixture
def catalog(store, tmp_path):
    folder = tmp_path / "processors"
    write_processor(folder, example("review_sentiment"), name="cached_reviews", system=LONG_SYSTEM,
                    cache={"ttl": "1h"})
    write_processor(folder, example("review_sentiment"), name="cached_reviews_rt", system=LONG_SYSTEM,
                    cache={"ttl": "5m"}, mode="realtime")
    write_processor(folder, example("ticket_triage"), name="cached_tickets", system=LONG_SYSTEM,
                    cache={"ttl": "5m"})
    return load_catalog(store, [PACKAGE_PROCESSORS_DIR, folder])


@pytest.fixture
def conn(database_url, schema):
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as c:
        yield c
