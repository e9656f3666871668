"""Fixtures for the console tests: the real app over a real store, spoken to through Starlette's test
client (HTTP in process, the same ASGI app uvicorn serves)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from forge_dagster.console import ConsoleConfig, create_app
from forge_dagster.console.security import SESSION_COOKIE

TOKEN = "console-test-token-7f3a9c"


@pytest.fixture
def console(store):
    """A read-only console (no token) over the test's store."""
    with TestClient(create_app(store, ConsoleConfig())) as client:
        yield client


@pytest.fixture
def operator(store):
    """A console with a token, signed in: its cookie jar holds the session."""
    with TestClient(create_app(store, ConsoleConfig(token=TOKEN))) as client:
        answer = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert answer.status_code == 303 and SESSION_COOKIE in client.cookies
        yield client


def csrf_of(page_html: str) -> str:
    """The CSRF token of the first form on a page."""
    marker = 'name="csrf" value="'
    start = page_html.index(marker) + len(marker)
    return page_html[start:page_html.index('"', start)]
