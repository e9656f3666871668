"""Intake rejects bad lines one by one; the claim keeps using its index."""

from __future__ import annotations

import json

from forge_dagster.core.intake import parse_lines
from forge_dagster.core.store import JobSpec, LeaseStore, job_sql
from tests.helpers import forge_env, forge_process


def test_bad_lines_are_rejected_per_line_and_good_ones_enqueued(store: LeaseStore):
    lines = [
        json.dumps({"id": "a", "processor": "p", "input": {"text": "ok"}}),
        '{"processor": "p", "input": {"text": ',  # malformed JSON
        json.dumps({"input": {"text": "no processor"}}),  # missing field
        json.dumps({"processor": "p", "input": "not an object"}),  # wrong type
        json.dumps({"processor": "p", "input": {"text": "x" * 300_000}}),  # oversized
        json.dumps({"processor": "p", "input": {}, "max_attempts": "3"}),  # wrong type
        json.dumps(["not", "an", "object"]),
        "",
        json.dumps({"id": "b", "processor": "p", "input": {"text": "also ok"}}),
    ]
    parsed = parse_lines(lines)
    assert [e.line for e in parsed.errors] == [2, 3, 4, 5, 6, 7]
    assert "not valid JSON" in parsed.errors[0].error
    assert "processor: Field required" in parsed.errors[1].error
    assert "input" in parsed.errors[2].error
    assert "byte limit" in parsed.errors[3].error
    assert "max_attempts" in parsed.errors[4].error
    report = store.enqueue(parsed.specs)
    assert len(report.accepted) == 2 and parsed.lines == [1, 9]


def test_duplicate_ids_are_reported_not_dropped(store: LeaseStore):
    report = store.enqueue([JobSpec("p", {}, external_id="x"), JobSpec("p", {}, external_id="x")])
    assert len(report.accepted) == 1
    assert [(r.index, r.external_id) for r in report.rejected] == [(1, "x")]
    again = store.enqueue([JobSpec("p", {}, external_id="x")])
    assert again.accepted == [] and "duplicate id 'x'" in again.rejected[0].error


def test_submit_cli_reports_rejections_with_line_numbers(tmp_path, database_url: str, schema: str, store):
    good = {"processor": "ticket_triage", "input": {"subject": "Login fails", "body": "500 on /login"}}
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join([
        json.dumps(good),
        "{broken",
        json.dumps({"processor": "no_such_processor", "input": {}}),
        json.dumps({"processor": "ticket_triage", "input": {"subject": "missing body"}}),
        json.dumps({**good, "input": {**good["input"], "subject": "Other"}}),
    ]) + "\n")
    env = forge_env(database_url, schema)
    proc = forge_process(["submit", str(path), "--json"], env=env, stdout=-1, stderr=-1, text=True)
    out, err = proc.communicate(timeout=120)
    result = json.loads(out)
    assert result["accepted"] == 2
    assert [r["line"] for r in result["rejected"]] == [2, 3, 4]
    assert "unknown processor 'no_such_processor'" in result["rejected"][1]["error"]
    assert "body" in result["rejected"][2]["error"]
    assert "mode=external" in err
    assert store.counts() == {"pending": 2}

    # Submitting the same file again enqueues nothing twice: its lines are reported as duplicates.
    again = forge_process(["submit", str(path), "--json"], env=env, stdout=-1, stderr=-1, text=True)
    result = json.loads(again.communicate(timeout=120)[0])
    assert result["accepted"] == 0 and sum("duplicate" in r["error"] for r in result["rejected"]) == 2
    assert store.counts() == {"pending": 2}


def test_claim_reads_pending_work_through_its_partial_index(store: LeaseStore):
    store.enqueue([JobSpec("p", {"i": i}, mode="realtime") for i in range(20_000)])
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET state = 'succeeded' WHERE id % 10 <> 0")
        conn.execute("ANALYZE jobs")
        params = {"k": 100, "mode": "realtime", "to_state": "running", "owner": "x", "ttl": 30}
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + job_sql.CLAIM_JOBS, params))
        conn.rollback()
    assert "jobs_claim_idx" in plan, plan
    assert "jobs_lease_idx" in plan, plan
    assert "Seq Scan" not in plan, plan  # the update finds its rows by primary key, not a table scan
