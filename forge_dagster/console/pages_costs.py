"""The console's cost and key pages: cost per day, model and processor with the cost report's chart,
budgets and what each holds back, unpriced models flagged; provider keys masked, with their pause
reasons, probes and rate-limit headroom (never the key itself)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forge_dagster.console.context import Console, int_arg
from forge_dagster.core.platform.cost_reports import cost_by_day_and_model, cost_chart_png, since

DEFAULT_DAYS = 30


def routes(console: Console) -> list[Route]:
    store = console.store

    def costs(request: Request):
        days = min(int_arg(request, "days") or DEFAULT_DAYS, 3650)
        by = store.console.costs(since(days))
        unpriced = [r for r in by["model"] if r["unpriced_attempts"]]
        spent, in_flight = store.costs.usage_today()
        held = {a["scope"]: a for a in store.console.budget_alerts_today()}
        budgets = [{"scope": scope, "daily_usd": limit, "spent": spent.get(scope, 0),
                    "in_flight": in_flight.get(scope, 0), "held_jobs": held.get(scope, {}).get("held_jobs", 0),
                    "last_held": held.get(scope, {}).get("last_at")}
                   for scope, limit in sorted(store.costs.budgets().items())]
        return console.render(request, "costs.html", days=days, by=by, unpriced=unpriced, budgets=budgets)

    def chart(request: Request):
        days = min(int_arg(request, "days") or DEFAULT_DAYS, 3650)
        png = cost_chart_png(cost_by_day_and_model(store, days))
        return Response(png, media_type="image/png")

    def keys(request: Request):
        return console.render(request, "keys.html", keys=store.console.keys(), outages=store.keys.outages(),
                              holds=store.keys.holds())

    return [Route("/costs", costs), Route("/costs/chart.png", chart), Route("/keys", keys)]
