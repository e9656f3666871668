"""The `cost_report` Dagster asset: a markdown table and a PNG chart of cost per day and model."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import dagster as dg
import pytest

from forge_dagster.assets.costs import cost_report
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.core.platform.cost_reports import ledger_summary
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import JobSpec
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.provider_keys import ProviderKeysResource
from tests.helpers import run_batch_round
from tests.platform.conftest import ticket_input

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def resources(database_url, schema, sim):
    return {"lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema),
            "provider_keys": ProviderKeysResource(simulator_url=sim.url)}


def materialize(resources, out: Path):
    result = dg.materialize([cost_report], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                            run_config={"ops": {"cost_report": {"config": {"output_dir": str(out)}}}})
    assert result.success
    return result.asset_materializations_for_node("cost_report")[0].metadata


def test_cost_report_tables_and_charts_cost_per_day_and_model(store, resources, ports, sim, tmp_path):
    catalog = load_catalog(store, [PACKAGE_PROCESSORS_DIR])
    submit_jobs(store, [JobSpec("ticket_triage", ticket_input(i), processor_version="1.0.0") for i in range(3)]
                  + [JobSpec("review_sentiment", {"review": f"Nice {i}"}, processor_version="1.0.0") for i in range(2)])
    run_batch_round(store, catalog, ports)
    meta = materialize(resources, tmp_path / "reports")

    report = meta["report"].value
    header = report.splitlines()[0]
    assert all(col in header for col in ("anthropic/claude-3-5-haiku-latest", "openai/gpt-4o-mini", "total"))
    assert re.search(r"^\| total\s+\|", report, re.MULTILINE)
    total = ledger_summary(store)["cost_usd"]
    assert meta["total_cost_usd"].value == pytest.approx(total, abs=1e-8)
    assert (meta["days_with_costs"].value, meta["models"].value) == (1, 2)

    chart = Path(meta["chart"].value)
    png = chart.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", report).group(1)
    assert base64.b64decode(embedded) == png
    # The one OpenAI batch was reconciled against its usage on the way, and agrees with the ledger.
    assert (meta["batches_reconciled_now"].value, meta["batches_differing"].value) == (1, 0)
    assert "| ticket_triage | 3 |" in meta["by_processor"].value


def test_cost_report_on_an_empty_ledger_says_so_and_still_draws(resources, tmp_path, store):
    meta = materialize(resources, tmp_path / "reports")
    assert meta["report"].value.startswith("_No costs booked in this window._")
    assert Path(meta["chart"].value).read_bytes().startswith(PNG_MAGIC)
    assert meta["total_cost_usd"].value == 0.0
