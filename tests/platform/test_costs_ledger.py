"""The cost ledger: one row per billed attempt (cached and reasoning tokens included), equal to the sum
of the attempts, unchanged by a second collection, reconciled against OpenAI's batch usage, reported."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from forge_dagster.core.batch.collection import collect_results, validate_batch
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import Provider, Usage
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.core.platform.cost_reports import (
    cost_table,
    ledger_summary,
    reconcile_batch,
    reconcile_collected,
)
from forge_dagster.core.platform.pricing import PRICING_VERSION, cost_usd
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import JobSpec
from tests.helpers import make_due, run_batch_round
from tests.platform.conftest import example, ticket_input, write_processor

# A reasoning model with a long shared system prompt: the simulator bills reasoning tokens and serves the
# prompt's prefix from its cache after the first request, like the provider does.
LONG_SYSTEM = "You triage customer support tickets.\n" + "Follow the routing policy exactly. " * 150


@pytest.fixture
def catalog(store, tmp_path):
    folder = tmp_path / "processors"
    write_processor(folder, example("ticket_triage"), name="reasoned_triage", model="o4-mini",
                    system=LONG_SYSTEM, max_tokens=800)
    return load_catalog(store, [PACKAGE_PROCESSORS_DIR, folder])


def ledger(conn) -> list[tuple]:
    return conn.execute("SELECT job_id, attempt, batch_id, input_tokens, cached_input_tokens, output_tokens, "
                        "reasoning_tokens, cost_usd, pricing_version, batch_priced FROM costs "
                        "ORDER BY job_id, attempt").fetchall()


@pytest.fixture
def conn(database_url, schema):
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as c:
        yield c


def run_with_one_repair(store, catalog, ports, sim, n: int = 4) -> list[int]:
    ids = submit_jobs(store, [JobSpec("reasoned_triage", ticket_input(i), processor_version="1.0.0")
                         for i in range(n)]).accepted
    sim.configure(schema_violation_rate=1.0)
    run_batch_round(store, catalog, ports)
    sim.configure(schema_violation_rate=0.0)
    make_due(store)
    run_batch_round(store, catalog, ports)
    return ids


def test_the_ledger_has_one_row_per_billed_attempt_and_equals_the_sum_of_attempts(store, catalog, ports, sim, conn):
    ids = run_with_one_repair(store, catalog, ports, sim)
    assert store.jobs.counts() == {"succeeded": 4}
    rows = ledger(conn)
    assert [(r[0], r[1]) for r in rows] == [(j, a) for j in ids for a in (1, 2)]  # rejected answers are billed
    assert all(r[8] == PRICING_VERSION and r[9] for r in rows)
    assert any(r[4] > 0 for r in rows) and all(r[6] > 0 for r in rows)  # cached and reasoning tokens kept

    # Each row is exactly the price of the usage its result line returned, at the batch price.
    lines = conn.execute("SELECT job_id, attempt, usage FROM batch_results").fetchall()
    priced = {(j, a): cost_usd(Provider.OPENAI, "o4-mini", Usage(**u), batch=True) for j, a, u in lines}
    assert {(r[0], r[1]): r[7] for r in rows} == priced
    per_job = {j: store.jobs.get(j)["cost_usd"] for j in ids}
    assert sum(per_job.values()) == sum(r[7] for r in rows) == store.batches.cost()
    for job_id, total in per_job.items():
        assert total == sum(r[7] for r in rows if r[0] == job_id)


def test_collecting_a_batch_twice_changes_nothing_in_the_ledger(store, catalog, ports, sim, conn):
    run_with_one_repair(store, catalog, ports, sim, n=3)
    before = ledger(conn)
    for (batch_id,) in conn.execute("SELECT id FROM batches ORDER BY id").fetchall():
        assert collect_results(store, ports, batch_id).stored_now == 0
        assert validate_batch(store, catalog, batch_id).by_state == {}
    assert ledger(conn) == before


def test_openai_batches_reconcile_with_the_batch_usage_and_a_lost_booking_shows(store, catalog, ports, sim, conn):
    run_with_one_repair(store, catalog, ports, sim, n=3)
    done = reconcile_collected(store, ports)
    assert len(done) == 2 and all(r.matched for r in done)
    assert done[0].provider_usage["reasoning_tokens"] == done[0].ledger["reasoning_tokens"] > 0
    assert reconcile_collected(store, ports) == []  # each batch once

    batch_id = done[1].batch_id
    lost = conn.execute("DELETE FROM costs WHERE batch_id = %s AND job_id = (SELECT min(job_id) FROM costs "
                        "WHERE batch_id = %s) RETURNING input_tokens", (batch_id, batch_id)).fetchone()[0]
    again = reconcile_batch(store, ports[Provider.OPENAI], batch_id)
    assert not again.matched
    assert f"ledger input_tokens {done[1].ledger['input_tokens'] - lost} vs provider " in again.notes[0]
    assert f"({-lost:+d})" in again.notes[0]
    assert not any(n.startswith("result lines") for n in again.notes)  # every line did come back
    recorded = {r["batch_id"]: r for r in store.costs.reconciliations()}
    assert recorded[batch_id]["matched"] is False and "ledger input_tokens" in recorded[batch_id]["note"]


def test_anthropic_batches_are_not_reconciled_for_want_of_batch_usage(store, catalog, ports, sim):
    submit_jobs(store, [JobSpec("review_sentiment", {"review": "Works well."}, processor_version="1.0.0")])
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 1}
    assert reconcile_collected(store, ports) == []


def test_cost_reports_by_processor_model_and_day_add_up_to_the_ledger(store, catalog, ports, sim):
    run_with_one_repair(store, catalog, ports, sim, n=2)
    submit_jobs(store, [JobSpec("ticket_triage", ticket_input(9), processor_version="1.0.0")])
    run_batch_round(store, catalog, ports)
    total = ledger_summary(store)
    assert total["attempts"] == 5
    by_processor = {r["processor"]: r for r in cost_table(store, "processor")}
    assert {k: v["attempts"] for k, v in by_processor.items()} == {"reasoned_triage": 4, "ticket_triage": 1}
    assert {r["model"] for r in cost_table(store, "model")} == {"openai/o4-mini", "openai/gpt-4o-mini"}
    [today] = cost_table(store, "day", days=1)
    assert today["day"] == datetime.now(UTC).date().isoformat()
    for by in ("processor", "model", "day"):
        rows = cost_table(store, by)
        assert sum(r["attempts"] for r in rows) == 5
        assert sum(r["cost_usd"] for r in rows) == pytest.approx(total["cost_usd"], abs=1e-8)


@pytest.fixture
def unpriced_catalog(store, tmp_path):
    folder = tmp_path / "processors"
    write_processor(folder, example("ticket_triage"), name="inhouse_triage", model="ft:gpt-4o-mini:acme:triage:1")
    return load_catalog(store, [PACKAGE_PROCESSORS_DIR, folder])


def test_an_unpriced_model_books_its_tokens_without_a_cost_and_reports_say_so(store, unpriced_catalog, ports, conn):
    ids = submit_jobs(store, [JobSpec("inhouse_triage", ticket_input(i), processor_version="1.0.0")
                         for i in range(3)]).accepted
    run_batch_round(store, unpriced_catalog, ports)
    assert store.jobs.counts() == {"succeeded": 3}
    rows = ledger(conn)
    assert [r[0] for r in rows] == ids
    assert all(r[3] > 0 and r[5] > 0 and r[7] is None for r in rows)  # tokens kept, cost unknown (not 0)

    [by_model] = cost_table(store, "model")
    assert by_model["unpriced_attempts"] == 3 and by_model["cost_usd"] == 0.0
    assert by_model["input_tokens"] == sum(r[3] for r in rows)
    assert ledger_summary(store) == {"attempts": 3, "cost_usd": 0.0, "unpriced_attempts": 3}
    # The operator's check names what is missing: a price, not a booking.
    flagged = dict(store.batches.succeeded_without_output_or_cost())
    assert set(flagged) == set(ids) and all("without a price" in why for why in flagged.values())


def test_a_prices_file_prices_a_model_the_table_lacks(store, unpriced_catalog, ports, conn, tmp_path, monkeypatch):
    prices = tmp_path / "prices.yaml"
    prices.write_text("version: acme-2026-12\nprices:\n"
                      "  - {provider: openai, model: 'ft:gpt-4o-mini:acme:triage:1', input: 0.30, output: 1.20}\n")
    monkeypatch.setenv("FORGE_PRICES_FILE", str(prices))
    submit_jobs(store, [JobSpec("inhouse_triage", ticket_input(1), processor_version="1.0.0")])
    run_batch_round(store, unpriced_catalog, ports)
    [row] = ledger(conn)
    usage = Usage(input_tokens=row[3], cached_input_tokens=row[4], output_tokens=row[5])
    assert row[7] == cost_usd(Provider.OPENAI, "ft:gpt-4o-mini:acme:triage:1", usage, batch=True) > 0
    assert row[8] == f"{PRICING_VERSION}+acme-2026-12"
    assert store.batches.succeeded_without_output_or_cost() == []


def test_a_wrong_prices_file_never_stops_the_ledger(store, catalog, ports, conn, tmp_path, monkeypatch):
    """The file may go wrong while work runs: attempts are still settled and booked, with their tokens
    and no cost, under a version that says the file was unusable."""
    prices = tmp_path / "prices.yaml"
    prices.write_text("version: broken\nprices: [{provider: openai, model: o4-mini, input: 1}]\n")
    monkeypatch.setenv("FORGE_PRICES_FILE", str(prices))
    submit_jobs(store, [JobSpec("ticket_triage", ticket_input(1), processor_version="1.0.0")])
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 1}
    [row] = ledger(conn)
    assert row[3] > 0 and row[7] is None and row[8] == f"{PRICING_VERSION}+unusable FORGE_PRICES_FILE"
