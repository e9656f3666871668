"""`forge processors | costs | budgets | export`: the prompt platform from the command line.

Registered into the `forge` parser by `add_platform_commands`. Like every forge command, each prints
its mode on stderr; `--json` output goes to stdout. Errors the operator can fix exit with status 1 or 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _open():
    from forge_dagster.core.runtime import open_store

    runtime, store = open_store()
    print(runtime.describe(), file=sys.stderr, flush=True)
    return store


def _table(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False) if rows else "(none)"


def _fail(message: str, code: int = 1) -> int:
    print(f"forge: {message}", file=sys.stderr)
    return code


# -- processors ----------------------------------------------------------------------------------


def _list(store, args) -> int:
    from forge_dagster.core.processor_registry import load_catalog

    catalog = load_catalog(store)
    rows = [{"name": e.processor.name, "version": e.processor.version, "status": e.status,
             "provider": str(e.processor.provider), "model": e.processor.model, "mode": e.processor.mode,
             "tags": list(e.processor.tags), "registered": e.created_at.isoformat() if e.created_at else None}
            for e in sorted(catalog.entries.values(), key=lambda e: (e.processor.name, e.created_at))]
    if args.json:
        print(json.dumps(rows))
    else:
        print(_table([{**r, "tags": ",".join(r["tags"])} for r in rows]))
        for problem in catalog.problems:
            print(f"problem: {problem}")
    return 0


def _resolve(catalog, name: str, version: str | None):
    """A registered processor (active, else newest, when no version) or a YAML file, and its status."""
    from forge_dagster.core.processors import load_processor_file

    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        processor = load_processor_file(name)
        status = catalog.entries[processor.key].status if processor.key in catalog.entries else "unregistered"
        return processor, status
    if version is None:
        version = catalog.active_version(name) or (catalog.versions(name) or [None])[-1]
    if version is None or (name, version) not in catalog.entries:
        raise KeyError(f"processor {name}{' ' + version if version else ''} is not registered")
    return catalog[(name, version)], catalog.status(name, version)


def _show(store, args) -> int:
    from forge_dagster.core.processor_registry import load_catalog

    processor, status = _resolve(load_catalog(store), args.name, args.version)
    shown = {"status": status, **processor.model_dump(mode="json"),
             "history": [{**e, "at": e["at"].isoformat()} for e in store.processors.events(processor.name)]}
    print(json.dumps(shown, indent=None if args.json else 2))
    return 0


def _preview(store, args) -> int:
    from forge_dagster.core.preview import preview_request
    from forge_dagster.core.processor_registry import load_catalog
    from forge_dagster.core.processors import validate_input

    processor, status = _resolve(load_catalog(store), args.name, args.version)
    job_input = json.loads(Path(args.input).read_text(encoding="utf-8"))
    if isinstance(job_input, dict) and "input" in job_input and "processor" in job_input:
        job_input = job_input["input"]  # an intake line
    problems = validate_input(processor, job_input)
    if problems:
        return _fail("input: " + "; ".join(problems))
    sample = Path(args.sample).read_text(encoding="utf-8") if args.sample else None
    shown = {"processor": processor.name, "version": processor.version, "status": status,
             **preview_request(processor, job_input, sample)}
    print(json.dumps(shown, indent=None if args.json else 2, ensure_ascii=False))
    return 0 if sample is None or shown["sample"]["accepted"] else 3


def _promote(store, args) -> int:
    from forge_dagster.core.processor_registry import load_catalog, promote

    load_catalog(store)  # registers YAML added since the last sync
    previous = promote(store, args.name, args.version)
    print(f"{args.name} {args.version} is active" + (f"; {previous} retired" if previous else ""))
    return 0


def _retire(store, args) -> int:
    from forge_dagster.core.processor_registry import load_catalog, retire

    load_catalog(store)
    print(f"{args.name} {retire(store, args.name, args.version)} retired")
    return 0


def _sync(store, args) -> int:
    from forge_dagster.core.processor_registry import sync_processors
    from forge_dagster.core.processors import default_processor_dirs

    report = sync_processors(store, default_processor_dirs() + [Path(d) for d in args.dir])
    for name, version, status in report.registered:
        print(f"registered {name} {version} ({status})")
    print(f"{len(report.registered)} registered, {report.unchanged} unchanged, {len(report.conflicts)} conflicts")
    for conflict in report.conflicts:
        print(f"conflict: {conflict}")
    return 1 if report.conflicts else 0


def cmd_processors(args: argparse.Namespace) -> int:
    from forge_dagster.core.processors import ProcessorError
    from forge_dagster.core.store.processor_store import RegistryError

    actions = {"list": _list, "show": _show, "preview": _preview, "promote": _promote, "retire": _retire,
               "sync": _sync}
    store = _open()
    with store:
        try:
            return actions[args.action](store, args)
        except (RegistryError, ProcessorError, KeyError, OSError, json.JSONDecodeError) as exc:
            return _fail(str(exc).strip('"'))


# -- costs, budgets, export ----------------------------------------------------------------------


def cmd_costs(args: argparse.Namespace) -> int:
    from forge_dagster.core.reporting import cost_table, ledger_summary, reconcile_collected

    if args.prices:
        from forge_dagster.core.config import load_settings
        from forge_dagster.core.costs import PricesFileError, pricing_table
        from forge_dagster.core.runtime import mode_line

        print(mode_line(load_settings()), file=sys.stderr, flush=True)
        try:
            table = pricing_table()
        except PricesFileError as exc:
            return _fail(str(exc))
        print(json.dumps(table) if args.json else _table(table))
        return 0
    store = _open()
    with store:
        reconciled = []
        if args.reconcile:
            from forge_dagster.core.providers.registry import ProviderRegistry
            from forge_dagster.resources.providers import ProviderPortsResource

            simulator = os.environ.get("FORGE_SIMULATOR_URL", "http://127.0.0.1:8700")
            ports = ProviderRegistry.from_env() or ProviderPortsResource(simulator_url=simulator).ports
            reconciled = reconcile_collected(store, ports)
        rows = cost_table(store, args.by, args.days)
        total = ledger_summary(store, args.days)
    if args.json:
        print(json.dumps({"by": args.by, "rows": rows, "total": total,
                          "reconciled": [{"batch_id": r.batch_id, "matched": r.matched, "notes": r.notes}
                                         for r in reconciled]}))
        return 0
    print(_table([{**r, "cost_usd": f"{r['cost_usd']:.6f}"} for r in rows]))
    unpriced = (f" ({total['unpriced_attempts']} without a price: their tokens are counted, not their cost; "
                "add the model to a FORGE_PRICES_FILE)") if total["unpriced_attempts"] else ""
    print(f"total: {total['attempts']} billed attempts, ${total['cost_usd']:.6f}{unpriced}")
    for r in reconciled:
        print(f"batch {r.batch_id}: " + ("reconciled" if r.matched else "DIFFERS: " + "; ".join(r.notes)))
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    store = _open()
    with store:
        costs = store.processors.costs
        if args.action == "set":
            if args.usd < 0:
                return _fail("a budget cannot be negative", 2)
            costs.set_budget(args.scope, str(args.usd))
        elif args.action == "clear" and not costs.clear_budget(args.scope):
            return _fail(f"no budget for {args.scope!r}")
        spent, in_flight = costs.usage_today()
        rows = [{"scope": scope, "daily_usd": float(limit), "booked_today": float(spent.get(scope, 0)),
                 "in_flight": float(in_flight.get(scope, 0))} for scope, limit in costs.budgets().items()]
    if args.json:
        print(json.dumps(rows))
    else:
        print(_table(rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from forge_dagster.core.exports import export_validated_outputs
    from forge_dagster.core.processor_registry import load_catalog

    store = _open()
    with store:
        result = export_validated_outputs(store, load_catalog(store), args.processor, args.output, args.format,
                                          version=args.version)
    print(f"wrote {result.rows} rows of {args.processor} to {result.path}")
    return 0


def add_platform_commands(sub) -> None:
    """Add `processors`, `costs`, `budgets` and `export` to the forge subcommands."""
    p = sub.add_parser("processors", help="the processor registry: list, show, preview, promote, retire, sync")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="every registered version and its status")
    a.add_argument("--json", action="store_true")
    for action, helptext in (("show", "one version's definition and history (default: the active one)"),
                             ("preview", "render the exact provider request without sending it")):
        a = actions.add_parser(action, help=helptext)
        a.add_argument("name", help="processor name (or a YAML file, for preview before registering)")
        a.add_argument("--version")
        a.add_argument("--json", action="store_true")
    a.add_argument("--input", required=True, help="JSON file with the job input (or an intake line)")
    a.add_argument("--sample", help="a file holding a model answer to validate (and show the repair for)")
    a = actions.add_parser("promote", help="make a draft version active (the active one is retired)")
    a.add_argument("name")
    a.add_argument("version")
    a = actions.add_parser("retire", help="retire a version (default: the active one)")
    a.add_argument("name")
    a.add_argument("version", nargs="?")
    a = actions.add_parser("sync", help="register YAML processors the registry does not have yet")
    a.add_argument("--dir", action="append", default=[], help="another folder of YAML processors")
    p.set_defaults(func=cmd_processors)

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
