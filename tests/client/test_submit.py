"""Submitting through the client: lists and DataFrames, idempotent by intake id, a row the template cannot
render refused alone with its reason, and a request that cannot be carried out refused before anything is
written."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

from forge_dagster import Forge
from forge_dagster.client import OperatorError
from forge_dagster.core.platform.registry import load_catalog, retire
from tests.helpers import ROOT, forge_env

from .conftest import TICKET, realtime_ticket


def tickets(n: int, start: int = 0) -> list[dict]:
    return [{"subject": f"Ticket {i}", "body": "The export button does nothing."} for i in range(start, start + n)]


def test_a_list_of_dicts_becomes_pending_jobs_pinned_to_the_active_version(forge: Forge, store):
    sent = forge.submit(TICKET, tickets(3))
    assert len(sent.ids) == 3 and sent.refused == [] and sent.existing == []
    for job_id, row in zip(sent.ids, tickets(3), strict=True):
        job = store.jobs.get(job_id)
        assert (job["state"], job["source"], job["processor_version"], job["payload"]) == (
            "pending", "client", "1.0.0", row)
        assert job["mode"] == "batch" and job["max_attempts"] == 3


def test_a_dataframe_row_missing_a_template_field_is_refused_with_its_reason_and_the_rest_go_in(forge: Forge, store):
    frame = pd.DataFrame({"ticket": ["a", "b", "c"], "subject": ["Login", None, "Export"],
                          "body": ["Cannot log in.", "No subject here.", math.nan], "n": [1, 2, 3]})
    sent = forge.submit(TICKET, frame, ids="ticket")

    assert [(r.row, r.id) for r in sent.refused] == [(1, "b"), (2, "c")]
    assert "subject" in sent.refused[0].reason and "body" in sent.refused[1].reason
    [job_id] = sent.ids
    job = store.jobs.get(job_id)
    assert job["external_id"] == "a"
    assert job["payload"] == {"ticket": "a", "subject": "Login", "body": "Cannot log in.", "n": 1}  # plain JSON
    assert store.jobs.counts(source="client") == {"pending": 1}


def test_submitting_the_same_ids_again_returns_the_same_jobs_and_makes_none(forge: Forge, store):
    first = forge.submit(TICKET, tickets(3), ids=["t-0", "t-1", "t-2"])
    again = forge.submit(TICKET, tickets(4), ids=["t-0", "t-1", "t-2", "t-3"])

    assert again.ids[:3] == first.ids and again.existing == first.ids and again.refused == []
    assert store.jobs.get(again.ids[3])["external_id"] == "t-3"
    assert store.jobs.counts(source="client") == {"pending": 4}
    assert forge.submit(TICKET, tickets(4), ids=["t-0", "t-1", "t-2", "t-3"]).ids == again.ids


def test_an_id_repeated_in_one_call_or_held_by_another_processor_is_refused(forge: Forge, store, echo_step):
    forge.submit("echo_step", [{"x": 1}], ids=["shared"])
    sent = forge.submit(TICKET, tickets(3), ids=["one", "one", "shared"])

    assert len(sent.ids) == 1
    assert [(r.row, r.reason) for r in sent.refused] == [
        (1, "id 'one' repeats row 0"),
        (2, f"id 'shared' is already job {store.jobs.by_intake_ids('client', ['shared'])['shared'][0]}, "
            "of processor echo_step")]


def test_another_source_keeps_its_own_ids(forge: Forge, store):
    mine = forge.submit(TICKET, tickets(1), ids=["t-0"])
    theirs = Forge(store, source="team-b").submit(TICKET, tickets(1), ids=["t-0"])
    assert mine.ids != theirs.ids and theirs.existing == []


@pytest.mark.parametrize("version, says", [
    ("9.9.9", "has no version 9.9.9"),
    ("2.0.0", "is retired"),
])
def test_a_version_that_does_not_exist_or_is_retired_is_refused_and_nothing_is_submitted(
    forge: Forge, store, version, says,
):
    realtime_ticket(store, "2.0.0")
    retire(store, TICKET, "2.0.0")
    with pytest.raises(OperatorError, match=says):
        forge.submit(TICKET, tickets(2), version=version)
    assert store.jobs.counts() == {}


def test_an_unknown_processor_or_unusable_ids_are_refused_and_nothing_is_submitted(forge: Forge, store):
    with pytest.raises(OperatorError, match="'nope' is unknown .*ticket_triage"):
        forge.submit("nope", tickets(1))
    with pytest.raises(OperatorError, match="1 ids for 2 rows"):
        forge.submit(TICKET, tickets(2), ids=["only-one"])
    with pytest.raises(OperatorError, match="names a column some rows lack"):
        forge.submit(TICKET, tickets(2), ids="ticket")
    with pytest.raises(OperatorError, match="timezone"):
        forge.submit(TICKET, tickets(1), due_at=pd.Timestamp("2030-01-01").to_pydatetime())
    assert store.jobs.counts() == {}


def test_a_named_version_routes_as_its_processor_says(forge: Forge, store):
    realtime_ticket(store, "7.0.0")
    sent = forge.submit(TICKET, tickets(2), version="7.0.0")
    assert {(j["processor_version"], j["mode"]) for j in map(store.jobs.get, sent.ids)} == {("7.0.0", "realtime")}


def test_from_env_opens_the_environments_store_and_says_its_mode(database_url: str, schema: str, store, tmp_path):
    """A new process with only the environment: `Forge.from_env()` opens the store FORGE_DATABASE_URL and
    FORGE_DB_SCHEMA name, prints the mode line on stderr, and submits there."""
    code = ("from forge_dagster import Forge\n"
            "with Forge.from_env() as forge:\n"
            "    print(forge.submit('ticket_triage', [{'subject': 's', 'body': 'b'}], ids=['env-1']).ids[0])\n")
    done = subprocess.run([sys.executable, "-c", code], env=forge_env(database_url, schema,
                          FORGE_HOME=str(tmp_path / "home")), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "forge: mode=external" in done.stderr
    assert store.jobs.by_intake_ids("client", ["env-1"]) == {"env-1": (int(done.stdout), TICKET)}
    assert load_catalog(store, sync=False).active_version(TICKET) == "1.0.0"
