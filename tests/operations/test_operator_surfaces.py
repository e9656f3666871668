"""The operator's actions where operators meet them: the `forge jobs` command (as a process, as a user runs
it) and the `retry_jobs` / `cancel_jobs` jobs of Dagster's launchpad, whose runs record what they changed."""

from __future__ import annotations

import json
import subprocess

import dagster as dg
import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import JobSpec
from forge_dagster.jobs.operator_jobs import cancel_jobs_job, retry_jobs_job
from forge_dagster.resources.lease_store import LeaseStoreResource
from tests.helpers import forge_env, forge_process, register_processor


@pytest.fixture
def jobs(store):
    register_processor(store)
    return submit_jobs(store, [JobSpec("p", {"i": i}, external_id=f"row-{i}") for i in range(3)]).accepted


def _forge(database_url, schema, *args):
    proc = forge_process(list(args), forge_env(database_url, schema), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_the_jobs_command_lists_shows_cancels_and_retries(store, database_url, schema, jobs):
    code, out, _ = _forge(database_url, schema, "jobs", "list", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == sorted(jobs, reverse=True)

    code, out, _ = _forge(database_url, schema, "jobs", "cancel", "row-0", str(jobs[1]), "--reason", "runaway",
                          "--json")
    assert code == 0 and json.loads(out)["changed"] == 2
    code, out, _ = _forge(database_url, schema, "jobs", "list", "--state", "cancelled", "--json")
    assert {r["external_id"] for r in json.loads(out)} == {"row-0", "row-1"}

    code, out, _ = _forge(database_url, schema, "jobs", "show", "row-0")
    assert code == 0 and "cancelled: runaway" in out and "-> cancelled" in out

    code, out, _ = _forge(database_url, schema, "jobs", "retry", "--state", "cancelled", "--reason", "fixed",
                          "--json")
    assert code == 0 and json.loads(out)["changed"] == 2
    assert store.jobs.counts() == {"pending": 3}


def test_the_jobs_command_refuses_bad_input_and_changes_nothing(store, database_url, schema, jobs):
    before = store.jobs.counts()
    code, _, err = _forge(database_url, schema, "jobs", "retry", "row-0", "--reason", "x")
    assert code == 2 and "cannot retry" in err and "pending" in err
    code, _, err = _forge(database_url, schema, "jobs", "cancel", "row-404", "--reason", "x")
    assert code == 2 and "no job with id or intake id row-404" in err
    code, _, err = _forge(database_url, schema, "jobs", "show", "row-404")
    assert code == 1 and "row-404" in err
    assert store.jobs.counts() == before and store.jobs.operator_actions() == []


def _resources(database_url, schema):
    return {"lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema)}


def test_the_launchpad_jobs_act_and_record_what_they_changed(store, database_url, schema, jobs):
    result = cancel_jobs_job.execute_in_process(
        run_config={"ops": {"cancel_selected_jobs": {"config": {"ids": ["row-2"], "reason": "from the UI"}}}},
        resources=_resources(database_url, schema))
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["changed"].value == 1 and metadata["jobs"].value == [{"id": jobs[2], "from": "pending"}]
    assert store.jobs.get(jobs[2])["state"] == "cancelled"
    assert store.jobs.events(jobs[2])[-1]["actor"].startswith("operator:dagster:")

    result = retry_jobs_job.execute_in_process(
        run_config={"ops": {"retry_selected_jobs": {"config": {"states": ["cancelled"], "reason": "again"}}}},
        resources=_resources(database_url, schema))
    assert result.output_for_node("retry_selected_jobs") == 1
    assert store.jobs.get(jobs[2])["state"] == "pending"


def test_a_launchpad_request_the_engine_refuses_fails_the_run_and_changes_nothing(store, database_url, schema, jobs):
    with pytest.raises(dg.Failure, match="nothing changed: cannot retry"):
        retry_jobs_job.execute_in_process(
            run_config={"ops": {"retry_selected_jobs": {"config": {"ids": ["row-1"], "reason": "x"}}}},
            resources=_resources(database_url, schema))
    assert store.jobs.counts() == {"pending": 3}
