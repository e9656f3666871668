"""`forge processors`: the processor registry from the command line (list, show, preview, promote,
retire, sync)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from forge_dagster.cli.common import fail, open_announced, table


def _list(store, args) -> int:
    from forge_dagster.core.platform.registry import load_catalog

    catalog = load_catalog(store)
    rows = [{"name": e.processor.name, "version": e.processor.version, "status": e.status,
             "provider": str(e.processor.provider), "model": e.processor.model, "mode": e.processor.mode,
             "tags": list(e.processor.tags), "registered": e.created_at.isoformat() if e.created_at else None}
            for e in sorted(catalog.entries.values(), key=lambda e: (e.processor.name, e.created_at))]
    if args.json:
        print(json.dumps(rows))
    else:
        print(table([{**r, "tags": ",".join(r["tags"])} for r in rows]))
        for problem in catalog.problems:
            print(f"problem: {problem}")
    return 0


def _resolve(catalog, name: str, version: str | None):
    """A registered processor (active, else newest, when no version) or a YAML file, and its status."""
    from forge_dagster.core.platform.catalog import load_processor_file

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
    from forge_dagster.core.platform.registry import load_catalog

    processor, status = _resolve(load_catalog(store), args.name, args.version)
    shown = {"status": status, **processor.model_dump(mode="json"),
             "history": [{**e, "at": e["at"].isoformat()} for e in store.processors.events(processor.name)]}
    print(json.dumps(shown, indent=None if args.json else 2))
    return 0


def _preview(store, args) -> int:
    from forge_dagster.core.platform.preview import preview_request
    from forge_dagster.core.platform.processors import validate_input
    from forge_dagster.core.platform.registry import load_catalog

    processor, status = _resolve(load_catalog(store), args.name, args.version)
    job_input = json.loads(Path(args.input).read_text(encoding="utf-8"))
    if isinstance(job_input, dict) and "input" in job_input and "processor" in job_input:
        job_input = job_input["input"]  # an intake line
    problems = validate_input(processor, job_input)
    if problems:
        return fail("input: " + "; ".join(problems))
    sample = Path(args.sample).read_text(encoding="utf-8") if args.sample else None
    shown = {"processor": processor.name, "version": processor.version, "status": status,
             **preview_request(processor, job_input, sample)}
    print(json.dumps(shown, indent=None if args.json else 2, ensure_ascii=False))
    return 0 if sample is None or shown["sample"]["accepted"] else 3


def _promote(store, args) -> int:
    from forge_dagster.core.platform.registry import load_catalog, promote

    load_catalog(store)  # registers YAML added since the last sync
    previous = promote(store, args.name, args.version)
    print(f"{args.name} {args.version} is active" + (f"; {previous} retired" if previous else ""))
    return 0


def _retire(store, args) -> int:
    from forge_dagster.core.platform.registry import load_catalog, retire

    load_catalog(store)
    print(f"{args.name} {retire(store, args.name, args.version)} retired")
    return 0


def _sync(store, args) -> int:
    from forge_dagster.core.platform.catalog import default_processor_dirs
    from forge_dagster.core.platform.registry import sync_processors

    report = sync_processors(store, default_processor_dirs() + [Path(d) for d in args.dir])
    for name, version, status in report.registered:
        print(f"registered {name} {version} ({status})")
    print(f"{len(report.registered)} registered, {report.unchanged} unchanged, {len(report.conflicts)} conflicts")
    for conflict in report.conflicts:
        print(f"conflict: {conflict}")
    return 1 if report.conflicts else 0


def cmd_processors(args: argparse.Namespace) -> int:
    from forge_dagster.core.platform.processors import ProcessorError
    from forge_dagster.core.store.processor_store import RegistryError

    actions = {"list": _list, "show": _show, "preview": _preview, "promote": _promote, "retire": _retire,
               "sync": _sync}
    store = open_announced()
    with store:
        try:
            return actions[args.action](store, args)
        except (RegistryError, ProcessorError, KeyError, OSError, json.JSONDecodeError) as exc:
            return fail(str(exc).strip('"'))


def add_commands(sub) -> None:
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
