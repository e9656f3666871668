"""One simulator for the session, reset to default knobs before each test; SDK clients pointed at it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from forge_dagster.simulator import Simulator

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture(scope="session")
def _clients(simulator: Simulator) -> Iterator[dict[str, Any]]:
    # Built once: SDK clients are costly to construct and hold no simulator state.
    clients = {
        "openai": openai.OpenAI(base_url=simulator.openai_base_url, api_key=OPENAI_KEY, max_retries=0),
        "anthropic": anthropic.Anthropic(base_url=simulator.anthropic_base_url, api_key=ANTHROPIC_KEY,
                                         max_retries=0),
        "ollama": ollama.Client(host=simulator.ollama_host),
        "http": httpx.Client(timeout=30),
    }
    yield clients
    clients["openai"].close()
    clients["anthropic"].close()
    clients["http"].close()


@pytest.fixture
def oai(sim: Simulator, _clients: dict[str, Any]) -> openai.OpenAI:
    """openai.OpenAI pointed at the simulator, max_retries=0."""
    return _clients["openai"]


@pytest.fixture
def claude(sim: Simulator, _clients: dict[str, Any]) -> anthropic.Anthropic:
    """anthropic.Anthropic pointed at the simulator, max_retries=0."""
    return _clients["anthropic"]


@pytest.fixture
def olla(sim: Simulator, _clients: dict[str, Any]) -> ollama.Client:
    return _clients["ollama"]


@pytest.fixture
def http(sim: Simulator, _clients: dict[str, Any]) -> httpx.Client:
    """A plain HTTP client for raw requests (no SDK)."""
    return _clients["http"]


def _wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last value: {value!r}")
        time.sleep(0.05)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """wait_for(read, done, timeout_s=10): call `read` until `done(value)`, failing after the deadline."""
    return _wait_for


def batch_lines(n: int, model: str = "gpt-4o-mini", prefix: str = "req") -> bytes:
    """An OpenAI batch input file with n chat.completions requests."""
    import json

    rows = [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user", "content": f"question {prefix} {i}"}]}}
            for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def make_batch_file() -> Callable[..., bytes]:
    """make_batch_file(n, model=..., prefix=...): bytes of an OpenAI batch input file."""
    return batch_lines


def anthropic_requests(n: int, prefix: str = "req", **params: Any) -> list[dict[str, Any]]:
    base = {"model": "claude-haiku-4-5", "max_tokens": 256}
    return [{"custom_id": f"{prefix}-{i}",
             "params": {**base, **params, "messages": [{"role": "user", "content": f"question {prefix} {i}"}]}}
            for i in range(n)]


@pytest.fixture
def make_requests() -> Callable[..., list[dict[str, Any]]]:
    """make_requests(n, prefix=..., **params): an Anthropic batch `requests` array."""
    return anthropic_requests
