"""The cost report: what LLM work cost per UTC day and model, as a markdown table and a PNG chart.

Materialising it first reconciles collected OpenAI batches with their batch usage, so the report says
whether the ledger agrees with what the provider counted.
"""

import base64
from pathlib import Path

import dagster as dg

from forge_dagster.constants import OPERATIONS_GROUP
from forge_dagster.core.config import load_settings
from forge_dagster.core.platform.cost_reports import (
    cost_by_day_and_model,
    cost_chart_png,
    cost_markdown,
    cost_table,
    reconcile_collected,
)
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.provider_keys import ProviderKeysResource


class CostReportConfig(dg.Config):
    days: int = 30  # the window, in UTC days up to today
    output_dir: str | None = None  # where the PNG goes (default: $FORGE_HOME/reports)


@dg.asset(group_name=OPERATIONS_GROUP, kinds={"python", "postgres"})
def cost_report(
    context: dg.AssetExecutionContext, config: CostReportConfig, lease_store: LeaseStoreResource,
    provider_keys: ProviderKeysResource,
) -> dg.MaterializeResult:
    """Cost per UTC day and model from the cost ledger (one row per billed attempt): a markdown table
    with totals, a stacked PNG chart, costs by processor, and how OpenAI batches reconcile."""
    store = lease_store.store
    reconciled = reconcile_collected(store, provider_keys.ports)
    differing = [r for r in reconciled if not r.matched]
    for r in differing:
        context.log.warning(f"batch {r.batch_id} does not reconcile: {'; '.join(r.notes)}")
    table = cost_by_day_and_model(store, config.days)
    png = cost_chart_png(table, title=f"Cost per day and model, last {config.days} days (USD)")
    folder = Path(config.output_dir or Path(load_settings().forge_home) / "reports")
    folder.mkdir(parents=True, exist_ok=True)
    chart = folder / "cost_report.png"
    chart.write_bytes(png)
    by_processor = cost_table(store, "processor", config.days)
    image = base64.b64encode(png).decode()
    report = f"{cost_markdown(table)}\n\n![cost per day and model](data:image/png;base64,{image})"
    processors_md = "\n".join(f"| {r['processor']} | {r['attempts']} | ${r['cost_usd']:,.4f} |" for r in by_processor)
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(report),
        "chart": dg.MetadataValue.path(str(chart)),
        "by_processor": dg.MetadataValue.md("| processor | attempts | cost |\n|---|---|---|\n" + processors_md
                                            if by_processor else "_nothing booked_"),
        "total_cost_usd": dg.MetadataValue.float(round(float(table.to_numpy().sum()) if not table.empty else 0.0, 8)),
        "days_with_costs": dg.MetadataValue.int(len(table.index)),
        "models": dg.MetadataValue.int(len(table.columns)),
        "batches_reconciled_now": dg.MetadataValue.int(len(reconciled)),
        "batches_differing": dg.MetadataValue.int(len(differing)),
    })
