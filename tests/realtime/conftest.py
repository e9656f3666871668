"""Fixtures for the realtime tests: jobs on a fresh store schema, keys on the session simulator, and an
executor running on its own thread (as a worker process would) while the test watches the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.realtime import (
    KeyRing,
    RealtimeConfig,
    RealtimeExecutor,
    RealtimeStats,
    keys_from_env,
)
from forge_dagster.core.store import ForgeStore, JobSpec

TICKET = "ticket_triage"  # OpenAI
REVIEW = "review_sentiment"  # Anthropic


@pytest.fixture
def catalog(store):
    """The registry's catalog of the test's store (the packaged processors registered), as the pipeline reads it."""
    from forge_dagster.core.platform.registry import load_catalog

    return load_catalog(store)


def variant(store: ForgeStore, catalog, name: str = TICKET, **changes):
    """A new version of processor `name` with `changes`, registered in the store (jobs may succeed only on
    registered versions); returns it and the registry's catalog that holds it."""
    from forge_dagster.core.platform.registry import load_catalog, register_processors

    processor = catalog[name].model_copy(update=changes)
    register_processors(store, [(processor, "tests")])
    return processor, load_catalog(store)


def ring_for(sim, **env: str) -> KeyRing:
    """Keys as the environment `env` names them (none: the simulator's key), pointed at `sim`."""
    env = {name: (sim.openai_base_url if value == "SIM_OPENAI" else value) for name, value in env.items()}
    return KeyRing(keys_from_env(env, simulator_url=sim.url, timeout_s=10))


def enqueue(store: ForgeStore, n: int, processor: str = TICKET, *, max_attempts: int = 3,
            version: str | None = None) -> list[int]:
    """n realtime jobs for `processor`; returns their ids."""
    def payload(i: int) -> dict:
        if processor == TICKET:
            return {"subject": f"Ticket {i}", "body": "The export button does nothing."}
        return {"review": f"Review {i}: it works well."}

    version = version or load_processors()[processor].version
    specs = [JobSpec(processor, payload(i), processor_version=version, mode="realtime", max_attempts=max_attempts)
             for i in range(n)]
    return submit_jobs(store, specs).accepted


@dataclass
class Running:
    """An executor running on a background thread."""

    executor: RealtimeExecutor
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    stats: RealtimeStats | None = None
    error: BaseException | None = None

    def start(self, **run_kwargs) -> Running:
        def target() -> None:
            try:
                self.stats = self.executor.run_sync(stop=self.stop, **run_kwargs)
            except BaseException as exc:  # reported by finish()
                self.error = exc

        self.thread = threading.Thread(target=target, name="realtime-test-worker", daemon=True)
        self.thread.start()
        return self

    def finish(self, timeout_s: float = 30.0) -> RealtimeStats:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the realtime worker did not stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Executors started by a test are stopped after it, whatever happened."""
    started: list[Running] = []
    yield started
    for r in started:
        r.stop.set()
        if r.thread is not None:
            r.thread.join(30)


def start_executor(started: list[Running], store: ForgeStore, catalog, ring: KeyRing,
                   config: RealtimeConfig | None = None, **run_kwargs) -> Running:
    r = Running(RealtimeExecutor(store, catalog, ring, config or RealtimeConfig()))
    started.append(r)
    return r.start(**run_kwargs)


def chat_calls(sim, path: str = "/v1/chat/completions") -> list[dict]:
    """The simulator's log of inference calls on `path`, oldest first."""
    return sorted((r for r in sim.requests() if r["path"] == path), key=lambda r: r["ts"])


class RecordingProxy:
    """A plain HTTP relay in front of the simulator that keeps every JSON request it forwards with its
    answer: what the provider was sent, word for word (the simulator's own log keeps no bodies)."""

    def __init__(self, upstream: str) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        self.exchanges: list[tuple[str, dict, int, dict]] = []  # (path, request body, status, answer body)
        client = httpx.Client(base_url=upstream, timeout=60)
        exchanges = self.exchanges

        class Relay(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _relay(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = client.request(self.command, self.path, content=raw, headers=headers)
                if raw:
                    exchanges.append((self.path, json.loads(raw), answer.status_code, answer.json()))
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self._client = client
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def chats(self) -> list[tuple[dict, int, dict]]:
        """(request body, status, answer body) of every chat completion, in arrival order."""
        return [(body, status, answer) for path, body, status, answer in self.exchanges
                if path.endswith("/chat/completions")]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@pytest.fixture
def proxy(sim) -> Iterator[RecordingProxy]:
    p = RecordingProxy(sim.url)
    yield p
    p.stop()
