"""Small helpers shared by tests: waiting on a condition with a deadline, running forge as a process."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_HOMES: list[tempfile.TemporaryDirectory] = []


def session_forge_home() -> Path:
    """A FORGE_HOME for forge subprocesses, in a temporary directory of this test session (not the repo)."""
    if not _HOMES:
        _HOMES.append(tempfile.TemporaryDirectory(prefix="forge-test-home-", ignore_cleanup_errors=True))
        atexit.register(_HOMES[0].cleanup)
    return Path(_HOMES[0].name)


def wait_until(condition: Callable[[], object], *, timeout_s: float = 30.0, every_s: float = 0.05, what: str = ""):
    """Poll `condition` until it returns a truthy value (returned) or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(every_s)


def forge_env(database_url: str, schema: str, **extra: str) -> dict[str, str]:
    """Environment for a `forge` subprocess pointed at one test schema."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    env.update({"FORGE_DATABASE_URL": database_url, "FORGE_DB_SCHEMA": schema, "PYTHONPATH": str(ROOT),
                "FORGE_HOME": str(session_forge_home())})
    env.update(extra)
    return env


def forge_process(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    """Start `python -m forge_dagster.cli ARGS` as a child process."""
    return subprocess.Popen([sys.executable, "-m", "forge_dagster.cli", *args], env=env, cwd=ROOT, **kwargs)


def run_batch_round(store, catalog, ports) -> list[int]:
    """The batch path once, as the Dagster assets run it: build and submit, poll, collect and validate what
    ended; the ids of the batches that ended."""
    from forge_dagster.core.batch.building import build_and_submit
    from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch

    build_and_submit(store, catalog, ports)
    ended = poll_open_batches(store, ports).ended
    for batch_id in ended:
        collect_results(store, ports, batch_id)
        validate_batch(store, catalog, batch_id)
    return ended


def make_due(store) -> None:
    """Make waiting jobs due now (their backoff is the store's business, tested there)."""
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET run_after = now() WHERE state = 'pending'")


# A realtime LLM processor any JSON object satisfies: tests of the store, the outbox and the relay enqueue
# jobs for it and succeed them through `succeed` (validated, as every success must be).
TEST_PROCESSOR = {"name": "p", "version": "1.0.0", "provider": "openai", "model": "gpt-4o-mini",
                  "mode": "realtime", "template": "Answer.", "max_tokens": 50,
                  "response_schema": {"type": "object"}}


def register_processor(store, **fields):
    """Register a processor (TEST_PROCESSOR with `fields` laid over it) in the store's registry."""
    return _register(store, {**TEST_PROCESSOR, **fields})


def _register(store, definition: dict):
    from forge_dagster.core.platform.processors import Processor
    from forge_dagster.core.platform.registry import register_processors

    processor = Processor.model_validate(definition)
    register_processors(store, [(processor, "tests")])
    return processor


def accept(store, job, output):
    """`output` validated against the job's pinned registered processor: what a job may succeed with."""
    from forge_dagster.core.platform.registry import load_catalog
    from forge_dagster.core.platform.validation import accepted_output, validate_output

    processor = load_catalog(store)[(job.processor, job.processor_version)]
    return accepted_output(validate_output(processor, output), processor, "test")


def succeed(store, items, *, conn=None) -> set[int]:
    """Succeed claimed jobs with their outputs, each validated against its pinned registered processor."""
    return store.jobs.succeed_many([(job, accept(store, job, output)) for job, output in items], conn=conn)


ECHO_HANDLER = "tests.store.handlers:echo"


def register_step(store, name: str = "step", handler: str = ECHO_HANDLER, **fields):
    """Register a non-LLM step: a processor whose jobs a handler (module:function) runs, in mode handler."""
    return _register(store, {"name": name, "version": "1.0.0", "handler": handler, **fields})
