"""Rows other applications insert are reviewed before any claim; every way in routes a job the same way
(its processor's mode, and for `auto` processors: small or due soon runs realtime)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from forge_dagster.core.intake.inbox import intake_file
from forge_dagster.core.intake.routing import processor_check, review_external_rows, submit_jobs
from forge_dagster.core.platform.catalog import ProcessorCatalog, load_processors
from forge_dagster.core.platform.registry import load_catalog, promote, register_processors
from forge_dagster.core.store import ForgeStore, JobSpec

SMALL = {"subject": "Export broken", "body": "The export button does nothing."}
LARGE = {"subject": "Logs attached", "body": "stack frame\n" * 2000}  # far over the auto size bound


@pytest.fixture
def registry(store: ForgeStore):
    """ticket_triage 1.0.0 (retired) and 1.1.0 (active), ticket_auto (auto) and ticket_live (realtime)."""
    ticket = load_processors()["ticket_triage"]
    register_processors(store, [(ticket, None)])
    register_processors(store, [(ticket.model_copy(update={"version": "1.1.0"}), None),
                                (ticket.model_copy(update={"name": "ticket_auto", "mode": "auto"}), None),
                                (ticket.model_copy(update={"name": "ticket_live", "mode": "realtime"}), None)])
    promote(store, "ticket_triage", "1.1.0")
    return load_catalog(store, sync=False)


def insert_as_another_application(database_url: str, schema: str, rows: list[dict]) -> dict[str, int]:
    """Plain INSERTs, as an application that knows only the jobs table would write them."""
    ids = {}
    with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
        for row in rows:
            row = {"processor_version": None, "mode": None, "callback_url": None, "due_at": None, **row}
            ids[row["external_id"]] = conn.execute(
                "INSERT INTO jobs (source, external_id, processor, processor_version, mode, payload, callback_url,"
                " due_at) VALUES ('crm', %(external_id)s, %(processor)s, %(processor_version)s, %(mode)s,"
                " %(payload)s, %(callback_url)s, %(due_at)s) RETURNING id",
                {**row, "payload": Jsonb(row["payload"])}).fetchone()[0]
    return ids


def test_every_externally_inserted_row_is_reviewed_before_any_claim(store, registry, database_url, schema):
    soon, later = datetime.now(UTC) + timedelta(minutes=10), datetime.now(UTC) + timedelta(days=1)
    ids = insert_as_another_application(database_url, schema, [
        {"external_id": "plain", "processor": "ticket_triage", "payload": SMALL},
        # Looks complete (a version and a mode), yet waits for review like every other inserted row.
        {"external_id": "complete", "processor": "ticket_triage", "processor_version": "1.1.0", "mode": "batch",
         "payload": SMALL},
        {"external_id": "asks_realtime", "processor": "ticket_triage", "mode": "realtime", "payload": SMALL},
        {"external_id": "urgent", "processor": "ticket_auto", "payload": LARGE, "due_at": soon},
        {"external_id": "tomorrow", "processor": "ticket_auto", "payload": LARGE, "due_at": later},
        {"external_id": "retired", "processor": "ticket_triage", "processor_version": "1.0.0", "payload": SMALL},
        {"external_id": "no_such_version", "processor": "ticket_triage", "processor_version": "9.9.9",
         "payload": SMALL},
        {"external_id": "no_such_processor", "processor": "nope", "payload": SMALL},
        {"external_id": "bad_input", "processor": "ticket_triage", "payload": {"subject": "no body"}},
        {"external_id": "bad_callback", "processor": "ticket_triage", "payload": SMALL,
         "callback_url": "ftp://crm.example/drop"},
        {"external_id": "inward_callback", "processor": "ticket_triage", "payload": SMALL,
         "callback_url": "http://169.254.169.254/latest/meta-data/"},
    ])
    assert store.jobs.claim(20, mode="batch") == [] and store.jobs.claim(20, mode="realtime") == []

    assert review_external_rows(store, registry) == (5, 6)
    jobs = {name: store.jobs.get(job_id) for name, job_id in ids.items()}
    assert {n: (j["state"], j["processor_version"], j["mode"]) for n, j in jobs.items() if j["state"] == "pending"} == {
        "plain": ("pending", "1.1.0", "batch"), "complete": ("pending", "1.1.0", "batch"),
        "asks_realtime": ("pending", "1.1.0", "realtime"), "urgent": ("pending", "1.0.0", "realtime"),
        "tomorrow": ("pending", "1.0.0", "batch")}
    reasons = {n: j["reason"] for n, j in jobs.items() if j["state"] == "failed"}
    assert "processor ticket_triage 1.0.0 is retired" in reasons["retired"]
    assert "unknown processor 'ticket_triage' version 9.9.9" in reasons["no_such_version"]
    assert "unknown processor 'nope'" in reasons["no_such_processor"]
    assert "body" in reasons["bad_input"]
    assert "http(s)" in reasons["bad_callback"]
    assert jobs["bad_callback"]["callback_url"] is None  # no stamp to an address the relay cannot reach
    assert "callback_url refused: 169.254.169.254 is link-local" in reasons["inward_callback"]
    assert store.outbox.lag()[0] == 0
    assert [e["to_state"] for e in store.jobs.events(ids["retired"])] == ["failed"]

    claimed = {j.external_id for j in store.jobs.claim(20, mode="batch")} | {j.external_id for j in store.jobs.claim(20)}
    assert claimed == {"plain", "complete", "asks_realtime", "urgent", "tomorrow"}
    assert review_external_rows(store, registry) == (0, 0)


def test_jobs_are_routed_alike_from_a_file_and_from_the_python_api(store, registry, tmp_path, monkeypatch):
    soon = datetime.now(UTC) + timedelta(minutes=10)
    later = datetime.now(UTC) + timedelta(days=1)
    cases = [("ticket_auto", LARGE, soon, "realtime"), ("ticket_auto", LARGE, later, "batch"),
             ("ticket_auto", LARGE, None, "batch"), ("ticket_auto", SMALL, later, "realtime"),
             ("ticket_live", LARGE, None, "realtime"), ("ticket_triage", SMALL, soon, "batch")]

    api = submit_jobs(store, [JobSpec(name, payload, due_at=due) for name, payload, due, _ in cases], source="api")
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps({"processor": name, "input": payload,
                                        **({"due_at": due.isoformat()} if due else {})}) + "\n"
                            for name, payload, due, _ in cases))
    filed = intake_file(store, registry, path)
    assert filed.rejected == [] and len(api.accepted) == filed.accepted == len(cases)

    expected = [mode for *_, mode in cases]
    for source in ("api", "file:jobs.jsonl"):
        with store.transaction() as conn:
            rows = conn.execute("SELECT mode, processor_version, due_at IS NOT NULL FROM jobs WHERE source = %s "
                                "ORDER BY id", (source,)).fetchall()
        assert [r[0] for r in rows] == expected, source
        assert [r[1] for r in rows] == ["1.0.0"] * 5 + ["1.1.0"]  # pinned at intake
        assert [r[2] for r in rows] == [due is not None for _, _, due, _ in cases]

    # The window is configured: with FORGE_AUTO_REALTIME_WITHIN_S=60, ten minutes away is not soon.
    monkeypatch.setenv("FORGE_AUTO_REALTIME_WITHIN_S", "60")
    [job_id] = submit_jobs(store, [JobSpec("ticket_auto", LARGE, due_at=soon)], source="api2").accepted
    assert store.jobs.get(job_id)["mode"] == "batch"
    assert processor_check(ProcessorCatalog([registry["ticket_auto"]]), realtime_within_s=900)(
        "ticket_auto", None, LARGE, soon) == ("1.0.0", "realtime")


def test_a_job_pinned_to_a_retired_version_is_refused_at_the_api(store, registry):
    report = submit_jobs(store, [JobSpec("ticket_triage", SMALL, processor_version="1.0.0"),
                            JobSpec("ticket_triage", SMALL)])
    assert [(r.index, "retired" in r.error) for r in report.rejected] == [(0, True)]
    assert store.jobs.get(report.accepted[0])["processor_version"] == "1.1.0"
