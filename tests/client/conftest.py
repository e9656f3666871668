"""Fixtures for the client tests: a Forge client on a fresh store schema, processors registered in it, and
workers (the handler worker, the realtime executor on the simulator) run on threads while the client waits."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from forge_dagster import Forge
from forge_dagster.core.platform.registry import load_catalog, register_processors
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.realtime.handler_worker import Worker
from tests.helpers import register_step

TICKET = "ticket_triage"  # packaged: an OpenAI chat processor with a {subject} / {body} template
NESTED_SCHEMA = {"type": "object", "required": ["echo"], "properties": {"echo": {
    "type": "object", "properties": {"subject": {"type": "string"}, "n": {"type": "integer"}}}}}


@pytest.fixture
def forge(store) -> Forge:
    load_catalog(store)  # the packaged processors registered, as any command's first catalog read does
    return Forge(store)


@pytest.fixture
def echo_step(store):
    """A handler step whose answer is its input under `echo` (nested properties in its schema)."""
    return register_step(store, "echo_step", response_schema=NESTED_SCHEMA)


def realtime_ticket(store, version: str = "7.0.0", **changes):
    """A draft version of ticket_triage that runs in realtime (jobs name it with `version=`)."""
    processor = load_catalog(store)[TICKET].model_copy(update={"version": version, "mode": "realtime", **changes})
    register_processors(store, [(processor, "tests")])
    return processor


class Background:
    """Work run on threads while a test watches; stopped (and its error raised) at the end of the test."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, work: Callable[[threading.Event], object]) -> None:
        def target() -> None:
            try:
                work(self.stop)
            except BaseException as exc:  # raised by finish()
                self.errors.append(exc)

        thread = threading.Thread(target=target, daemon=True, name="client-test-worker")
        thread.start()
        self.threads.append(thread)

    def handler_worker(self, store, step, handler) -> None:
        worker = Worker(store, handler, [step], concurrency=2, idle_sleep_s=0.02)
        self.start(lambda stop: worker.run(stop=stop))

    def realtime(self, store, sim) -> None:
        ring = KeyRing(keys_from_env({}, simulator_url=sim.url, timeout_s=10))
        executor = RealtimeExecutor(store, load_catalog(store, sync=False), ring, RealtimeConfig(concurrency=4))
        self.start(lambda stop: executor.run_sync(stop=stop))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive(), "a background worker did not stop"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def background() -> Iterator[Background]:
    work = Background()
    yield work
    work.finish()
