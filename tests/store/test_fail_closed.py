"""Fail closed at every door: no job succeeds without an output validated against its pinned processor.

Each test names a way a job could reach `succeeded` (the worker loop, a handler, SQL written by another
application) and shows the door is shut, in Python and in the store itself.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import load_processor_file
from forge_dagster.core.platform.processors import ProcessorError
from forge_dagster.core.realtime.handler_worker import Worker
from forge_dagster.core.store import ForgeStore, JobSpec
from tests.helpers import (
    ECHO_HANDLER,
    accept,
    forge_env,
    forge_process,
    register_processor,
    register_step,
    succeed,
)

ANSWER = {"category": "bug", "priority": "high", "summary": "Export does nothing."}
TRIAGE_SCHEMA = {"type": "object", "required": ["category"], "additionalProperties": False,
                 "properties": {"category": {"type": "string"}}}


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepted_rows(store: ForgeStore) -> int:
    with store.transaction() as conn:
        return conn.execute("SELECT count(*) FROM accepted_outputs").fetchone()[0]


def _submit(tmp_path: Path, env: dict, lines: list[dict]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    proc = forge_process(["submit", str(path)], env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()


def test_plain_forge_work_calls_a_provider_and_succeeds_nothing_when_none_answers(
    store: ForgeStore, database_url: str, schema: str, tmp_path: Path,
):
    """The report that opened this: `forge submit` of realtime LLM jobs, then plain `forge work --until-idle`,
    once marked them succeeded with an echo of their input. Now plain `forge work` runs them through the
    providers: with no provider answering, none succeeds and each ends with the provider's failure."""
    env = forge_env(database_url, schema, FORGE_HOME=str(tmp_path / "home"),
                    FORGE_SIMULATOR_URL=f"http://127.0.0.1:{_closed_port()}")
    register_processor(store, name="live_triage", mode="realtime", max_attempts=1)
    _submit(tmp_path, env, [{"processor": "live_triage", "input": {"i": i}, "max_attempts": 1} for i in range(2)])

    proc = forge_process(["work", "--until-idle"], env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]

    jobs = [store.jobs.get(i) for i in (1, 2)]
    assert {j["state"] for j in jobs} <= {"dead", "failed"}, jobs
    assert all(j["output"] is None for j in jobs)
    assert all("connect" in j["reason"].lower() or "transient" in j["reason"].lower() for j in jobs), jobs
    assert _accepted_rows(store) == 0
    assert json.loads(out.splitlines()[-1])["succeeded"] == 0


def test_a_handler_never_runs_llm_jobs_and_echo_is_no_default(
    store: ForgeStore, database_url: str, schema: str, tmp_path: Path,
):
    """`--handler` runs only the jobs of processors that declare that handler: naming one on LLM work (the
    old `--handler echo`, or the echo fixture by path) refuses to start and leaves every job untouched."""
    register_processor(store)
    ids = submit_jobs(store, [JobSpec("p", {"i": i}) for i in range(3)]).accepted
    env = forge_env(database_url, schema, FORGE_HOME=str(tmp_path / "home"))
    for handler in ("echo", ECHO_HANDLER):
        proc = forge_process(["work", "--until-idle", "--handler", handler], env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert f"no processor declares handler {handler!r}" in err
    assert [store.jobs.get(i)["state"] for i in ids] == ["pending"] * 3
    assert _accepted_rows(store) == 0


def test_a_handler_runs_the_jobs_of_its_processors_only_and_its_answers_are_validated(
    store: ForgeStore, database_url: str, schema: str, tmp_path: Path,
):
    register_processor(store)  # an LLM processor: its job must not be touched by the handler
    register_step(store, "echo_step")
    register_step(store, "strict_step", "tests.store.handlers:off_schema", response_schema=TRIAGE_SCHEMA)
    [llm] = submit_jobs(store, [JobSpec("p", {"i": 0})]).accepted
    [echoed] = submit_jobs(store, [JobSpec("echo_step", {"i": 1})]).accepted
    [off] = submit_jobs(store, [JobSpec("strict_step", {"i": 2})]).accepted
    env = forge_env(database_url, schema, FORGE_HOME=str(tmp_path / "home"))

    for handler in (ECHO_HANDLER, "tests.store.handlers:off_schema"):
        proc = forge_process(["work", "--until-idle", "--handler", handler], env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]

    assert store.jobs.get(echoed)["state"] == "succeeded"
    assert store.jobs.get(echoed)["output"] == {"echo": {"i": 1}}
    broken = store.jobs.get(off)
    assert broken["state"] == "invalid" and broken["output"] is None
    assert "schema" in broken["reason"] and "unexpected" in broken["reason"], broken["reason"]
    assert store.jobs.get(llm)["state"] == "pending"  # no handler ever saw the LLM job
    with store.transaction() as conn:
        assert conn.execute("SELECT job_id, accepted_by FROM accepted_outputs").fetchall() == [
            (echoed, f"handler {ECHO_HANDLER}")]


def test_a_handler_answer_that_breaks_the_schema_ends_invalid_in_process(store: ForgeStore):
    step = register_step(store, "strict_step", "tests.store.handlers:off_schema", response_schema=TRIAGE_SCHEMA)
    [job_id] = submit_jobs(store, [JobSpec("strict_step", {})]).accepted
    stats = Worker(store, lambda job: {"category": 7}, [step], concurrency=1, idle_sleep_s=0.01).run(until_idle=True)
    job = store.jobs.get(job_id)
    assert (stats.succeeded, job["state"], job["attempt"]) == (0, "invalid", 1)
    assert job["reason"].startswith("handler tests.store.handlers:off_schema: schema: 7 is not of type 'string'")


def test_the_store_refuses_succeeded_without_an_accepted_output(store: ForgeStore):
    """Rows another application writes (or any future code path) cannot fail open: the store itself refuses
    `succeeded` without the accepted output of that attempt."""
    register_processor(store)
    [job_id] = submit_jobs(store, [JobSpec("p", {})]).accepted
    refusals = [
        ("UPDATE jobs SET state = 'succeeded' WHERE id = %s", (job_id,)),
        ("UPDATE jobs SET state = 'succeeded', output = '{\"a\": 1}' WHERE id = %s", (job_id,)),
        ("INSERT INTO jobs (processor, processor_version, mode, payload, state, output, reviewed) "
         "VALUES ('p', '1.0.0', 'realtime', '{}', 'succeeded', '{\"a\": 1}', true)", ()),
    ]
    for statement, params in refusals:
        with pytest.raises(psycopg.errors.CheckViolation, match="succeeded refused"), store.transaction() as conn:
            conn.execute(statement, params)
    assert store.jobs.get(job_id)["state"] == "pending"


def test_the_store_refuses_an_accepted_output_changed_or_moved_to_another_version(store: ForgeStore):
    register_processor(store)
    register_processor(store, version="1.1.0")
    [job_id] = submit_jobs(store, [JobSpec("p", {}, processor_version="1.0.0")]).accepted
    [job] = store.jobs.claim(1)
    assert succeed(store, [(job, {"a": 1})]) == {job_id}

    for statement in ("UPDATE jobs SET output = '{\"a\": 2}' WHERE id = %s",  # edited in place
                      "UPDATE jobs SET processor_version = '1.1.0' WHERE id = %s"):  # re-pinned afterwards
        with pytest.raises(psycopg.errors.CheckViolation), store.transaction() as conn:
            conn.execute(statement, (job_id,))
    with pytest.raises(psycopg.errors.CheckViolation), store.transaction() as conn:
        # an accepted row that names a fingerprint the registry does not hold is no acceptance
        conn.execute("UPDATE accepted_outputs SET fingerprint = 'forged' WHERE job_id = %s", (job_id,))
        conn.execute("UPDATE jobs SET state = 'running' WHERE id = %s", (job_id,))
        conn.execute("UPDATE jobs SET state = 'succeeded' WHERE id = %s", (job_id,))
    assert store.jobs.get(job_id)["output"] == {"a": 1}


def test_an_output_validated_against_another_version_does_not_succeed_the_job(store: ForgeStore):
    register_processor(store)
    register_processor(store, version="1.1.0")
    [job_id] = submit_jobs(store, [JobSpec("p", {}, processor_version="1.0.0")]).accepted
    [job] = store.jobs.claim(1)
    other = accept(store, dataclasses.replace(job, processor_version="1.1.0"), {"a": 1})
    assert store.jobs.succeed_many([(job, other)]) == set()  # not this job's pin: nothing written
    assert store.jobs.get(job_id)["state"] == "running" and _accepted_rows(store) == 0
    with pytest.raises(TypeError):
        store.jobs.succeed_many([(job, {"a": 1})])  # a bare output is no acceptance
    with pytest.raises(ValueError):
        store.jobs.finish_many([job], to_state="succeeded")


def test_a_processor_naming_a_handler_that_cannot_be_imported_is_refused_at_load(tmp_path: Path):
    for handler, words in (("tests.store.no_such_module:run", "cannot import module 'tests.store.no_such_module'"),
                           ("tests.store.handlers:no_such_function", "has no callable 'no_such_function'"),
                           ("not a path", "handler")):
        path = tmp_path / "step.yaml"
        path.write_text(yaml.safe_dump({"name": "step", "version": "1.0.0", "handler": handler}))
        with pytest.raises(ProcessorError) as caught:
            load_processor_file(path)
        assert caught.value.field == "handler" and str(path) in str(caught.value) and words in str(caught.value)
    path.write_text(yaml.safe_dump({"name": "step", "version": "1.0.0", "handler": ECHO_HANDLER}))
    assert load_processor_file(path).mode == "handler"
