"""`forge memories | adapters`: the nightly runtime's knowledge and LoRA adapter versions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forge_dagster.cli.common import announce, open_announced
from forge_dagster.core.config import load_settings


def cmd_memories(args: argparse.Namespace) -> int:
    from forge_dagster.core.nightly.knowledge import format_memory, search

    store = open_announced(dagster=False, pool_size=1)
    with store:
        found = search(store.knowledge, args.query, limit=args.limit, tag=args.tag, include_compressed=args.all)
    if args.json:
        print(json.dumps([m.to_dict() for m in found]))
    else:
        print("\n".join(format_memory(m) for m in found) or f"no memories match {args.query!r}")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from forge_dagster.core.nightly.adapters import AdapterError, AdapterRegistry

    registry = AdapterRegistry(load_settings().forge_home / "adapters")
    announce()
    print(f"forge: adapters under {registry.root}", file=sys.stderr, flush=True)
    try:
        if args.action == "register":
            v = registry.register(Path(args.path), args.name, args.version)
            print(f"registered {v.name} {v.version} at {v.path}")
        elif args.action == "list":
            versions = registry.list(args.name)
            if args.json:
                print(json.dumps([v.to_dict() for v in versions]))
            else:
                print("\n".join(f"{'*' if v.active else ' '} {v.name} {v.version}  {v.registered_at or ''}"
                                for v in versions) or "no adapters registered")
        elif args.action == "activate":
            previous = registry.activate(args.name, args.version)
            print(f"{args.name}: current -> {args.version} (was {previous or 'none'})")
        else:
            old, new = registry.rollback(args.name)
            print(f"{args.name}: rolled back {old} -> {new}")
    except AdapterError as exc:
        print(f"forge adapters: {exc}", file=sys.stderr)
        return 2
    return 0



def add_commands(sub) -> None:
    p = sub.add_parser("memories", help="search the nightly chain's memories (full-text)")
    msub = p.add_subparsers(dest="action", required=True)
    m = msub.add_parser("search", help="memories matching a query: words, \"phrases\", -exclusions, or")
    m.add_argument("query")
    m.add_argument("--limit", type=int, default=10)
    m.add_argument("--tag", help="only memories with this tag")
    m.add_argument("--all", action="store_true", help="include memories folded into a weekly digest")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_memories)

    p = sub.add_parser("adapters", help="LoRA adapter versions: register, list, activate, rollback")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("register", help="copy an adapter folder (or file) in as NAME VERSION")
    a.add_argument("path")
    a.add_argument("--name", required=True)
    a.add_argument("--version", required=True, help="semver X.Y.Z")
    a = asub.add_parser("list", help="registered versions; * marks the active one")
    a.add_argument("--name")
    a.add_argument("--json", action="store_true")
    a = asub.add_parser("activate", help="point NAME's current link at VERSION (atomic swap)")
    a.add_argument("--name", required=True)
    a.add_argument("--version", required=True)
    a = asub.add_parser("rollback", help="re-activate the version active before the current one")
    a.add_argument("--name", required=True)
    p.set_defaults(func=cmd_adapters)

