"""An operator's cancel of an in-flight provider batch, on both providers through their official SDKs and
the simulator: what finished is harvested and validated, the rest requeued (attempt unspent) or cancelled,
every job ends in exactly one state, and bad requests change nothing."""

from __future__ import annotations

import json
import subprocess

import dagster as dg
import pytest

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.cancel import cancel_batch
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.batch.inspection import batch_detail, list_batches
from forge_dagster.core.ops.operator import OperatorError
from forge_dagster.jobs.batch_operator_jobs import cancel_batch_job
from tests.helpers import forge_env, forge_process, run_batch_round
from tests.pipeline.conftest import review, ticket
from tests.pipeline.test_engine import enqueue

LINES = {"openai": ticket, "anthropic": review}


def in_flight_batch(store, catalog, ports, sim, provider: str, n: int = 10) -> tuple[dict, list[int]]:
    """`n` jobs of `provider` submitted in one batch the provider is still working on (half of it finishes
    when cancelled)."""
    sim.configure(batch_processing_s=1000, cancel_complete_fraction=0.5)
    ids = enqueue(store, [LINES[provider](i) for i in range(n)])
    build_and_submit(store, catalog, ports)
    [batch] = store.batches.open_batches()
    assert batch["provider"] == provider and batch["state"] == "in_progress"
    return batch, ids


def snapshot(store) -> tuple:
    """Everything a refused request must leave as it was."""
    with store.transaction() as conn:
        jobs = conn.execute("SELECT id, state, attempt, reason, batch_id FROM jobs ORDER BY id").fetchall()
        batches = conn.execute("SELECT id, state, counts, updated_at FROM batches ORDER BY id").fetchall()
        actions = conn.execute("SELECT count(*) FROM operator_actions").fetchone()[0]
        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return jobs, batches, actions, outbox


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_cancel_requeue_harvests_finished_jobs_and_requeues_the_rest_with_their_attempt_unspent(
        store, catalog, ports, sim, provider):
    batch, ids = in_flight_batch(store, catalog, ports, sim, provider)
    report = cancel_batch(store, catalog, ports, batch["provider_batch_id"], then="requeue",
                          reason="wrong prompt version", actor="ana")
    assert report.ended and report.provider_state == "ended_cancelled"
    assert report.by_state() == {"pending": 5, "succeeded": 5} and not report.skipped
    rows = {i: store.jobs.get(i) for i in ids}
    finished = {i for i, r in rows.items() if r["state"] == "succeeded"}
    for job_id, row in rows.items():  # each job in exactly one state
        if job_id in finished:  # validated: the store refuses succeeded without an accepted output
            assert row["output"] and row["attempt"] == 1 and store.jobs.story(job_id)["accepted"]
        else:
            assert (row["state"], row["attempt"], row["batch_id"]) == ("pending", 0, None)
            assert row["reason"].startswith(f"batch {batch['id']} cancelled, requeued")
            assert store.jobs.events(job_id)[-1]["actor"] == "operator:ana"
    assert store.batches.get(batch["id"])["state"] == "collected"
    [action] = store.jobs.operator_actions()
    assert (action["action"], action["actor"], action["reason"], action["changed"]) == (
        "cancel_batch", "operator:ana", "wrong prompt version", 10)
    assert action["selector"]["batch_id"] == batch["id"] and action["selector"]["then"] == "requeue"

    sim.configure(batch_processing_s=0)  # the requeued half runs again, on its first attempt
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 10}
    assert all(store.jobs.get(i)["attempt"] == 1 for i in ids)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_cancel_then_cancel_ends_unfinished_jobs_cancelled(store, catalog, ports, sim, provider):
    batch, ids = in_flight_batch(store, catalog, ports, sim, provider)
    report = cancel_batch(store, catalog, ports, batch["forge_batch_id"], then="cancel", reason="not needed",
                          actor="ana")
    assert report.by_state() == {"cancelled": 5, "succeeded": 5}
    states = {i: store.jobs.get(i) for i in ids}
    assert sorted(r["state"] for r in states.values()) == ["cancelled"] * 5 + ["succeeded"] * 5
    for row in states.values():
        if row["state"] == "cancelled":
            assert row["reason"] == f"cancelled with batch {batch['id']}: not needed" and row["finished_at"]
    assert store.batches.get(batch["id"])["state"] == "collected"
    detail = batch_detail(store, batch["id"])
    assert detail["jobs"] == {"cancelled": 5, "succeeded": 5}
    assert detail["results"] == {"requeue": 5, "succeeded": 5}
    history = [h["state"] for h in detail["history"]]
    assert history[:3] == ["submitting", "in_progress", "ended"]
    assert sorted(history[3:]) == ["collected", "operator cancel_batch"]
    [action] = detail["actions"]
    assert (action["reason"], action["selector"]["then"]) == ("not needed", "cancel")


def test_cancel_refuses_bad_requests_and_changes_nothing(store, catalog, ports, sim):
    batch, _ = in_flight_batch(store, catalog, ports, sim, "openai")
    before = snapshot(store)
    for ref, kwargs, message in [
        ("nope", {"reason": "x"}, "no batch with id, forge batch id or provider batch id nope"),
        ("999999", {"reason": "x"}, "no batch with id"),
        (batch["id"], {"reason": "  "}, "say why"),
        (batch["id"], {"reason": "x", "then": "delete"}, "--then is requeue or cancel"),
    ]:
        with pytest.raises(OperatorError, match=message):
            cancel_batch(store, catalog, ports, ref, **kwargs)
    assert snapshot(store) == before
    assert not any(r["path"].endswith("/cancel") for r in sim.requests())  # the provider was never asked


def test_cancel_of_a_collected_batch_is_refused_with_nothing_changed(store, catalog, ports, sim):
    enqueue(store, [ticket(i) for i in range(4)])
    [batch_id] = run_batch_round(store, catalog, ports)
    before = snapshot(store)
    with pytest.raises(OperatorError, match=f"batch {batch_id} was already collected.*nothing changed"):
        cancel_batch(store, catalog, ports, batch_id, reason="too late")
    assert snapshot(store) == before and store.jobs.counts() == {"succeeded": 4}
    assert not any(r["path"].endswith("/cancel") for r in sim.requests())


def test_cancel_of_a_batch_that_ended_uncollected_is_refused(store, catalog, ports, sim):
    enqueue(store, [review(i) for i in range(3)])
    build_and_submit(store, catalog, ports)
    [batch_id] = poll_open_batches(store, ports).ended
    before = snapshot(store)
    with pytest.raises(OperatorError, match="already ended at the provider \\(ended_completed\\)"):
        cancel_batch(store, catalog, ports, batch_id, reason="late")
    assert snapshot(store) == before


def test_list_shows_age_counts_and_cost_filtered_by_state_and_provider(store, catalog, ports, sim):
    enqueue(store, [ticket(i) for i in range(3)] + [review(i) for i in range(2)])
    run_batch_round(store, catalog, ports)
    rows = list_batches(store)
    assert {r["provider"] for r in rows} == {"openai", "anthropic"}
    openai = list_batches(store, provider="openai")
    [row] = openai
    assert row["jobs"] == {"succeeded": 3} and row["request_count"] == 3 and row["cost_usd"] > 0
    assert row["age_s"] >= 0 and row["state"] == "collected"
    assert list_batches(store, states=["in_progress"]) == []
    with pytest.raises(OperatorError, match="no batch state done"):
        list_batches(store, states=["done"])


def forge(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """`forge ARGS` as the operator runs it: a process of its own; (exit status, stdout, stderr)."""
    proc = forge_process(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_forge_batches_cli_lists_shows_and_cancels_end_to_end(store, catalog, ports, sim, database_url, schema):
    batch, ids = in_flight_batch(store, catalog, ports, sim, "anthropic", n=6)
    env = forge_env(database_url, schema, FORGE_SIMULATOR_URL=sim.url)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):  # no key: the simulator answers
        env.pop(name, None)

    code, out, _ = forge(["batches", "list", "--state", "in_progress", "--json"], env)
    assert code == 0
    [row] = json.loads(out)
    assert (row["id"], row["jobs"], row["request_count"]) == (batch["id"], {"submitted": 6}, 6)

    before = snapshot(store)
    code, _, err = forge(["batches", "cancel", "msgbatch_nope", "--reason", "x"], env)
    assert code == 2 and "no batch with id, forge batch id or provider batch id msgbatch_nope" in err
    code, _, err = forge(["batches", "cancel", str(batch["id"])], env)
    assert code == 2 and "--reason" in err  # argparse: the reason is required
    assert snapshot(store) == before

    code, out, err = forge(["batches", "cancel", batch["provider_batch_id"], "--then", "cancel",
                            "--reason", "duplicate upload", "--json"], env)
    assert code == 0, err
    report = json.loads(out)
    assert (report["batch_id"], report["then"], report["provider_state"]) == (batch["id"], "cancel", "ended_cancelled")
    assert report["jobs_by_state"] == {"cancelled": 3, "succeeded": 3} and report["changed"] == 6
    assert sorted(store.jobs.get(i)["state"] for i in ids) == ["cancelled"] * 3 + ["succeeded"] * 3
    assert "mode=" in err  # the mode line, on stderr

    code, _, err = forge(["batches", "cancel", batch["forge_batch_id"], "--reason", "again"], env)
    assert code == 2 and "already collected" in err and "nothing changed" in err

    code, out, _ = forge(["batches", "show", batch["forge_batch_id"]], env)
    assert code == 0 and f"batch {batch['id']} ({batch['forge_batch_id']})" in out
    assert "operator cancel_batch" in out and "duplicate upload" in out and "cancelled=3" in out
    code, out, _ = forge(["batches", "show", str(batch["id"]), "--json"], env)
    detail = json.loads(out)
    assert detail["batch"]["state"] == "collected" and detail["jobs"] == {"cancelled": 3, "succeeded": 3}


def test_the_cancel_batch_launchpad_job_cancels_and_records_what_it_changed(store, catalog, ports, sim, resources):
    batch, ids = in_flight_batch(store, catalog, ports, sim, "openai", n=4)
    config = {"batch": batch["forge_batch_id"], "then": "requeue", "reason": "from the UI"}
    result = cancel_batch_job.execute_in_process(
        run_config={"ops": {"cancel_provider_batch": {"config": config}}}, resources=resources)
    assert result.success and result.output_for_node("cancel_provider_batch") == 4
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["batch_id"].value == batch["id"] and metadata["provider_state"].value == "ended_cancelled"
    assert metadata["jobs_by_state"].value == {"pending": 2, "succeeded": 2}
    assert metadata["changed"].value == 4 and metadata["left alone"].value == []
    assert metadata["operator_action"].value == store.jobs.operator_actions()[0]["id"]
    assert sorted(store.jobs.get(i)["state"] for i in ids) == ["pending", "pending", "succeeded", "succeeded"]
    assert store.jobs.events(ids[0])[-1]["actor"].startswith("operator:dagster:")


def test_a_cancel_batch_run_the_engine_refuses_fails_and_changes_nothing(store, catalog, ports, sim, resources):
    enqueue(store, [review(i) for i in range(2)])
    [batch_id] = run_batch_round(store, catalog, ports)
    before = snapshot(store)
    with pytest.raises(dg.Failure, match=f"nothing changed: batch {batch_id} was already collected"):
        cancel_batch_job.execute_in_process(
            run_config={"ops": {"cancel_provider_batch": {"config": {"batch": str(batch_id), "reason": "x"}}}},
            resources=resources)
    assert snapshot(store) == before


def test_cancel_of_a_batch_the_provider_already_finished_harvests_it_all(store, catalog, ports, sim):
    enqueue(store, [ticket(i) for i in range(3)])
    build_and_submit(store, catalog, ports)
    [batch] = store.batches.open_batches()
    assert ports["openai"].status(batch["provider_batch_id"]).ended  # ended at the provider, not yet polled
    report = cancel_batch(store, catalog, ports, batch["id"], then="cancel", reason="late")
    assert report.provider_state == "ended_completed" and report.by_state() == {"succeeded": 3}
    assert store.batches.get(batch["id"])["state"] == "collected"


def test_a_provider_still_cancelling_after_the_wait_is_left_to_the_pipeline(store, catalog, ports, sim):
    batch, ids = in_flight_batch(store, catalog, ports, sim, "anthropic", n=4)
    report = cancel_batch(store, catalog, ports, batch["id"], reason="stop it", wait_s=0)
    assert not report.ended and report.provider_state == "cancelling" and not report.changed
    assert store.batches.get(batch["id"])["state"] == "cancelling"
    assert store.jobs.operator_actions()[0]["selector"]["ended"] is False
    [ended] = poll_open_batches(store, ports).ended  # the pipeline finds it ended and collects it as usual
    collect_results(store, ports, ended)
    validate_batch(store, catalog, ended)
    assert sorted(store.jobs.get(i)["state"] for i in ids) == ["pending", "pending", "succeeded", "succeeded"]
