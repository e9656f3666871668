"""`forge costs | budgets | export`: the cost ledger, daily budgets and validated outputs as files."""

from __future__ import annotations

import argparse
import json

from forge_dagster.cli.common import announce, fail, open_announced, table


def cmd_costs(args: argparse.Namespace) -> int:
    from forge_dagster.core.platform.cost_reports import (
        cache_report,
        cost_table,
        ledger_summary,
        reconcile_collected,
    )

    if args.prices:
        from forge_dagster.core.platform.pricing import PricesFileError, pricing_table

        announce()
        try:
            prices = pricing_table()
        except PricesFileError as exc:
            return fail(str(exc))
        print(json.dumps(prices) if args.json else table(prices))
        return 0
    store = open_announced()
    with store:
        reconciled = []
        if args.reconcile:
            from forge_dagster.core.providers.registry import ProviderRegistry
            from forge_dagster.resources.provider_keys import ProviderKeysResource

            ports = ProviderRegistry.from_env() or ProviderKeysResource().ports  # no key: FORGE_SIMULATOR_URL's
            reconciled = reconcile_collected(store, ports)
        rows = cost_table(store, args.by, args.days)
        total = ledger_summary(store, args.days)
        caching = cache_report(store, args.days)
    if args.json:
        print(json.dumps({"by": args.by, "rows": rows, "total": total, "caching": caching,
                          "reconciled": [{"batch_id": r.batch_id, "matched": r.matched, "notes": r.notes}
                                         for r in reconciled]}))
        return 0
    print(table([{**r, "cost_usd": f"{r['cost_usd']:.6f}"} for r in rows]))
    unpriced = (f" ({total['unpriced_attempts']} without a price: their tokens are counted, not their cost; "
                "add the model to a FORGE_PRICES_FILE)") if total["unpriced_attempts"] else ""
    print(f"total: {total['attempts']} billed attempts, ${total['cost_usd']:.6f}{unpriced}")
    if any(r["cache_hits"] or r["cache_write_tokens"] for r in caching):
        print("\nprompt caching (hit rate: attempts that read the cache; saved: against plain input prices)")
        print(table([{"processor": r["processor"], "cache_hit_rate": f"{r['cache_hit_rate']:.1%}",
                      "read_tokens": r["cache_read_tokens"], "write_tokens": r["cache_write_tokens"],
                      "saved_usd": f"{r['saved_usd']:.6f}"} for r in caching]))
    for r in reconciled:
        print(f"batch {r.batch_id}: " + ("reconciled" if r.matched else "DIFFERS: " + "; ".join(r.notes)))
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    store = open_announced()
    with store:
        costs = store.costs
        if args.action == "set":
            if args.usd < 0:
                return fail("a budget cannot be negative", 2)
            costs.set_budget(args.scope, str(args.usd))
        elif args.action == "clear" and not costs.clear_budget(args.scope):
            return fail(f"no budget for {args.scope!r}")
        spent, in_flight = costs.usage_today()
        rows = [{"scope": scope, "daily_usd": float(limit), "booked_today": float(spent.get(scope, 0)),
                 "in_flight": float(in_flight.get(scope, 0))} for scope, limit in costs.budgets().items()]
    if args.json:
        print(json.dumps(rows))
    else:
        print(table(rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from forge_dagster.core.platform.exports import export_validated_outputs
    from forge_dagster.core.platform.registry import load_catalog

    store = open_announced()
    with store:
        result = export_validated_outputs(store, load_catalog(store), args.processor, args.output, args.format,
                                          version=args.version)
    print(f"wrote {result.rows} rows of {args.processor} to {result.path}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("costs", help="the cost ledger by processor, model or day")
    p.add_argument("--by", choices=["processor", "model", "day"], default="processor")
    p.add_argument("--days", type=int, help="only the last N UTC days (default: all)")
    p.add_argument("--reconcile", action="store_true", help="first reconcile collected OpenAI batches")
    p.add_argument("--prices", action="store_true", help="show the pricing table (USD per million tokens)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_costs)

    p = sub.add_parser("budgets", help="daily USD budgets per processor, or '*' for everything")
    actions = p.add_subparsers(dest="action")
    actions.add_parser("list", help="budgets with today's bookings and what is in flight")
    a = actions.add_parser("set", help="set SCOPE's daily budget in USD")
    a.add_argument("scope", help="a processor name, or '*' for all processors together")
    a.add_argument("usd", type=float)
    a = actions.add_parser("clear", help="remove SCOPE's budget")
    a.add_argument("scope")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_budgets, action="list")

    p = sub.add_parser("export", help="a processor's validated outputs as Parquet or CSV")
    p.add_argument("processor")
    p.add_argument("--format", choices=["parquet", "csv"], required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--version", help="only jobs pinned to this version")
    p.set_defaults(func=cmd_export)
