"""Intake rejects bad lines and bad jobs one by one, and the good ones still go in; the claim keeps
using its index."""

from __future__ import annotations

import json
from datetime import datetime

from forge_dagster.core.intake.lines import parse_lines
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import ForgeStore, JobSpec, job_sql
from tests.helpers import forge_env, forge_process


def test_bad_lines_are_rejected_per_line_and_good_ones_enqueued(store: ForgeStore):
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
    report = submit_jobs(store, parsed.specs)
    assert len(report.accepted) == 2 and parsed.lines == [1, 9]


def test_duplicate_ids_are_reported_not_dropped(store: ForgeStore):
    report = submit_jobs(store, [JobSpec("p", {}, external_id="x"), JobSpec("p", {}, external_id="x")])
    assert len(report.accepted) == 1
    assert [(r.index, r.external_id) for r in report.rejected] == [(1, "x")]
    again = submit_jobs(store, [JobSpec("p", {}, external_id="x")])
    assert again.accepted == [] and "duplicate id 'x'" in again.rejected[0].error


def test_submit_cli_reports_rejections_with_line_numbers(tmp_path, database_url: str, schema: str, store):
    good = {"processor": "ticket_triage", "input": {"subject": "Login fails", "body": "500 on /login"}}
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(b"\n".join([
        json.dumps(good).encode(),
        b"{broken",
        json.dumps({"processor": "no_such_processor", "input": {}}).encode(),
        json.dumps({"processor": "ticket_triage", "input": {"subject": "missing body"}}).encode(),
        # Valid JSON whose string PostgreSQL cannot store: this line alone is refused, not the file.
        json.dumps({**good, "input": {**good["input"], "body": "nul \u0000 here"}}).encode(),
        b'{"processor": "ticket_triage", "input": {"subject": "caf\xe9", "body": "latin-1"}}',  # not UTF-8
        json.dumps({**good, "callback_url": "ftp://example.com/drop"}).encode(),
        json.dumps({**good, "input": {**good["input"], "subject": "Other"}}).encode(),
        # Cloud metadata behind an IPv4-mapped address: refused at intake, before any relay would try it.
        json.dumps({**good, "input": {**good["input"], "subject": "Third"},
                    "callback_url": "http://[::ffff:169.254.169.254]/latest"}).encode(),
    ]) + b"\n")
    env = forge_env(database_url, schema)
    proc = forge_process(["submit", str(path), "--json"], env=env, stdout=-1, stderr=-1, text=True)
    out, err = proc.communicate(timeout=120)
    result = json.loads(out)
    assert result["accepted"] == 2
    assert [r["line"] for r in result["rejected"]] == [2, 3, 4, 5, 6, 7, 9]
    errors = [r["error"] for r in result["rejected"]]
    assert "unknown processor 'no_such_processor'" in errors[1]
    assert "body" in errors[2]
    assert "NUL character" in errors[3]
    assert "not valid UTF-8: byte 0xe9" in errors[4]
    assert "http(s)" in errors[5]
    assert "callback_url refused: ::ffff:a9fe:a9fe is link-local (IPv4-mapped form of 169.254.169.254)" in errors[6]
    assert "mode=external" in err
    assert store.jobs.counts() == {"pending": 2}

    # Submitting the same file again enqueues nothing twice: its lines are reported as duplicates.
    again = forge_process(["submit", str(path), "--json"], env=env, stdout=-1, stderr=-1, text=True)
    result = json.loads(again.communicate(timeout=120)[0])
    assert result["accepted"] == 0 and sum("duplicate" in r["error"] for r in result["rejected"]) == 2
    assert store.jobs.counts() == {"pending": 2}


def test_claim_reads_pending_work_through_its_partial_index(store: ForgeStore):
    submit_jobs(store, [JobSpec("p", {"i": i}, mode="realtime") for i in range(20_000)])
    with store.transaction() as conn:
        conn.execute("UPDATE jobs SET state = 'failed' WHERE id % 10 <> 0")  # finished work
        conn.execute("ANALYZE jobs")
        params = {"k": 100, "mode": "realtime", "to_state": "running", "owner": "x", "ttl": 30, "pins": None}
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + job_sql.CLAIM_JOBS, params))
        conn.rollback()
    assert "jobs_claim_idx" in plan, plan
    assert "jobs_lease_idx" in plan, plan
    assert "Seq Scan" not in plan, plan  # the update finds its rows by primary key, not a table scan


def test_each_bad_api_job_is_rejected_with_its_reason_and_the_good_ones_enqueued(store: ForgeStore):
    specs = [
        JobSpec("p", {"t": "ok"}, mode="realtime"),
        JobSpec("p", {"t": "nul \u0000"}, mode="realtime"),
        JobSpec("p", {}, mode="urgent"),
        JobSpec("p", {}, mode="realtime", max_attempts=0),
        JobSpec("p", {"x": float("nan")}, mode="realtime"),
        JobSpec("p", {"x": "\ud800"}, mode="realtime"),
        JobSpec("p", {"x": "y" * 300_000}, mode="realtime"),
        JobSpec("p", {}, mode="realtime", callback_url="file:///etc/passwd"),
        JobSpec("p\u0000", {}, mode="realtime"),
        JobSpec("p", {}, mode="realtime", due_at=datetime(2030, 1, 1)),  # no timezone
        JobSpec("p", {"t": "a backslash and u0000: \\u0000 is only text"}, mode="realtime"),
    ]
    report = submit_jobs(store, specs)
    reasons = {r.index: r.error for r in report.rejected}
    assert sorted(reasons) == list(range(1, 10))
    for index, expected in {1: "NUL character", 2: "mode must be one of batch, realtime", 3: "max_attempts",
                            4: "not JSON", 5: "unpaired surrogate", 6: "byte limit", 7: "http(s)",
                            8: "processor contains a NUL", 9: "timezone"}.items():
        assert expected in reasons[index], (index, reasons[index])
    assert len(report.accepted) == 2 and store.jobs.counts() == {"pending": 2}
    assert store.jobs.get(report.accepted[1])["payload"] == specs[10].payload


def test_a_row_the_database_refuses_is_rejected_alone(store: ForgeStore):
    """A constraint the checks before COPY do not know (one an operator added) fails one row, not all."""
    with store.transaction() as conn:
        conn.execute("ALTER TABLE jobs ADD CONSTRAINT no_legacy CHECK (processor <> 'legacy')")
    specs = [JobSpec("p", {"i": 0}, mode="batch"), JobSpec("legacy", {"i": 1}, mode="batch"),
             JobSpec("p", {"i": 2}, mode="batch", external_id="twice"),
             JobSpec("p", {"i": 3}, mode="batch", external_id="twice")]
    report = submit_jobs(store, specs)
    assert [(r.index, r.external_id) for r in report.rejected] == [(1, report.rejected[0].external_id), (3, "twice")]
    assert "refused by PostgreSQL" in report.rejected[0].error and "no_legacy" in report.rejected[0].error
    assert "duplicate id 'twice'" in report.rejected[1].error
    assert [store.jobs.get(i)["payload"]["i"] for i in report.accepted] == [0, 2]


def test_submit_cli_names_why_a_file_cannot_be_read_at_all(tmp_path, database_url: str, schema: str, store):
    good = {"processor": "ticket_triage", "input": {"subject": "Login fails", "body": "500 on /login"}}
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes((json.dumps(good) + "\n").encode("utf-16"))
    env = forge_env(database_url, schema)
    cases = [(utf16, "wrong encoding (UTF-16LE; Forge reads UTF-8)"), (tmp_path, "a folder, not a file")]
    for path, problem in cases:
        proc = forge_process(["submit", str(path), "--json"], env=env, stdout=-1, stderr=-1, text=True)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and out == "", err
        assert f"forge submit: {path}: {problem}" in err and "Traceback" not in err
    assert store.jobs.counts() == {}
