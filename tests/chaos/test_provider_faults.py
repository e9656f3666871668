"""Provider faults, each and mixed, on the batch and the realtime path: every job ends once with a
reason, no provider batch is created twice, accepted outputs are valid, waiting spends no attempt."""

from __future__ import annotations

from collections import Counter

import pytest
from jsonschema import Draft202012Validator

from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.realtime.calls import CallPolicy
from tests.chaos.batch_faults import FaultReport, crash_between_upload_and_create
from tests.chaos.faults import batch_scenarios, realtime_scenarios, run_scenario
from tests.chaos.realtime_faults import CONFIG

pytestmark = pytest.mark.chaos

JOBS = 10


def _jobs(store) -> list[dict]:
    with store.transaction() as conn:
        cur = conn.execute("SELECT id, external_id, processor, state, attempt, reason, output, usage "
                           "FROM jobs ORDER BY id")
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _routes(sim) -> Counter[str]:
    return Counter(f"{r['method']} {r['path']}" for r in sim.requests())


def _assert_sound(report: FaultReport, store) -> list[dict]:
    """Conservation, no duplicate provider batch, and every accepted output valid for its processor."""
    assert not report.conservation.problems, report.conservation.problems
    assert report.duplicate_batches == 0
    catalog = load_processors()
    jobs = _jobs(store)
    for job in jobs:
        if job["state"] == "succeeded":
            schema = catalog[job["processor"]].response_schema
            assert not list(Draft202012Validator(schema).iter_errors(job["output"])), job
    return jobs


def _states(jobs: list[dict]) -> Counter[str]:
    return Counter(j["state"] for j in jobs)


@pytest.mark.parametrize("name", list(batch_scenarios()))
def test_batch_path_under_provider_faults_ends_every_job_once_without_duplicate_batches(name, emptied_store, sim):
    store = emptied_store
    report = run_scenario("batch", name, store, sim, JOBS)
    jobs = _assert_sound(report, store)
    routes = _routes(sim)
    if name == "malformed + truncated":
        assert _states(jobs)["invalid"] >= 1, "the faults should have outlasted some jobs' attempts"
        assert all(("parse" in j["reason"] or "truncated" in j["reason"]) for j in jobs if j["state"] == "invalid")
        return
    if name == "mixed":  # a 400 inside a result line fails its job for good; the rest succeed
        assert all(j["state"] == "succeeded" or "400" in j["reason"] for j in jobs), jobs
        return
    assert _states(jobs) == {"succeeded": JOBS}, [(j["state"], j["reason"]) for j in jobs]
    attempts = Counter(j["attempt"] for j in jobs)
    if name == "429 storm":
        assert any(r["status"] == 429 for r in sim.requests()), "no storm happened"
    elif name == "quota exhaustion":
        assert attempts == {1: JOBS}, "waiting for a paused key must not spend attempts"
    elif name in ("timeouts", "ambiguous creates"):
        assert routes["GET /v1/batches"] + routes["GET /v1/messages/batches"] >= 1, "no create was ambiguous"
    elif name in ("expiry, partial results", "cancellation mid-way"):
        assert attempts[1] >= 1 and attempts[2] >= 1, "finished results are kept, the rest run again"
    elif name == "out-of-order results":  # matched by custom_id: each prompt is longer than the last
        for processor in ("ticket_triage", "review_sentiment"):
            tokens = [j["usage"]["input_tokens"] for j in jobs if j["processor"] == processor]
            assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), tokens


def test_crash_between_upload_and_batch_creation_is_resumed_without_a_second_batch(
    emptied_store, sim, database_url, module_schema,
):
    store = emptied_store
    report = crash_between_upload_and_create(store, database_url, module_schema, sim, jobs=JOBS)
    jobs = _assert_sound(report, store)
    assert _states(jobs) == {"succeeded": JOBS}
    routes = _routes(sim)
    assert routes["POST /v1/batches"] == 1 and routes["POST /v1/files"] == 1, routes


@pytest.mark.parametrize("name", list(realtime_scenarios()))
def test_realtime_path_under_provider_faults_ends_every_job_once(name, emptied_store, sim):
    store = emptied_store
    report = run_scenario("realtime", name, store, sim, JOBS)
    jobs = _assert_sound(report, store)
    statuses = Counter(r["status"] for r in sim.requests())
    attempts = Counter(j["attempt"] for j in jobs)
    if name == "timeouts":  # every call times out: bounded retries, then dead with the reason
        assert _states(jobs) == {"dead": JOBS}
        assert all("timed out" in j["reason"] for j in jobs), jobs[0]["reason"]
        attempts_each = realtime_scenarios()[name]["max_attempts"]
        bound = attempts_each * (1 + CallPolicy().transient_retries)  # attempts x calls per attempt
        assert report.provider_calls <= bound * JOBS
        return
    if name == "malformed + truncated":
        assert all(j["state"] in ("succeeded", "invalid") for j in jobs)
        return
    assert _states(jobs) == {"succeeded": JOBS}, [(j["state"], j["reason"]) for j in jobs]
    if name == "429 storm":
        assert 1 <= statuses[429] <= CONFIG.concurrency, statuses
        assert attempts == {1: JOBS}, "a 429 must not spend a job's attempt"
    elif name == "quota exhaustion":
        assert report.errors["keys_paused"] >= 1
        assert attempts == {1: JOBS}, "waiting for a paused key must not spend attempts"
