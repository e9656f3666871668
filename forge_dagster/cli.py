"""The `forge` command: submit, work, status, demo, sim, dev.

Every command prints one line (on stderr) saying which mode it runs in; `--json` output goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import open_store


def _announce(runtime) -> None:
    print(runtime.describe(), file=sys.stderr, flush=True)


def cmd_submit(args: argparse.Namespace) -> int:
    from forge_dagster.core.intake import parse_lines

    runtime, store = open_store()
    _announce(runtime)
    with open(args.file, "rb") as fh:
        parsed = parse_lines(fh)
    with store:
        report = store.enqueue(parsed.specs, source=args.source)
    rejected = [{"line": e.line, "error": e.error} for e in parsed.errors]
    rejected += [{"line": parsed.lines[r.index], "error": r.error} for r in report.rejected]
    rejected.sort(key=lambda r: r["line"])
    if args.json:
        print(json.dumps({"accepted": len(report.accepted), "rejected": rejected}))
    else:
        print(f"accepted {len(report.accepted)} jobs, rejected {len(rejected)} lines")
        for r in rejected:
            print(f"  line {r['line']}: {r['error']}")
    return 0 if not rejected else 1


def cmd_work(args: argparse.Namespace) -> int:
    from forge_dagster.core.worker import Worker, resolve_handler

    runtime, store = open_store(pool_size=args.concurrency + 2)
    _announce(runtime)
    with store:
        worker = Worker(store, resolve_handler(args.handler), concurrency=args.concurrency, mode=args.mode)
        stats = worker.run(until_idle=args.until_idle)
    print(json.dumps({"claimed": stats.claimed, "succeeded": stats.succeeded, "failed": stats.failed,
                      "lease_lost": stats.lease_lost}))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    runtime, store = open_store()
    _announce(runtime)
    with store:
        status = {"mode": runtime.mode, "jobs": store.counts(), "batches": store.batch_counts()}
    if args.json:
        print(json.dumps(status))
    else:
        print(f"jobs: {status['jobs'] or 'none'}\nbatches: {status['batches'] or 'none'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from forge_dagster.demo import run_demo

    return run_demo(args)


def cmd_sim(args: argparse.Namespace) -> int:
    from forge_dagster.simulator import serve
    from forge_dagster.simulator.cli import config_from_args

    serve(host=args.host, port=args.port, seed=args.seed, config=config_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge", description="Forge: LLM work as real infrastructure.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="enqueue the jobs of a JSONL file (one job per line)")
    p.add_argument("file")
    p.add_argument("--source", default="file", help="intake source name (ids are unique per source)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("work", help="run the claim loop in this process")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--until-idle", action="store_true", help="stop when no job of this mode is open")
    p.add_argument("--mode", default="realtime", choices=["realtime", "batch"])
    p.add_argument("--handler", default="echo", help="registered handler name or module:function")
    p.set_defaults(func=cmd_work)

    p = sub.add_parser("status", help="jobs and batches by state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="run the main job end to end on the embedded default")
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="run the provider SIMULATOR (a test double, not a provider)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sim, sim_args=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "sim":
        try:
            from forge_dagster.simulator.cli import add_cli_arguments

            add_cli_arguments(parser._subparsers._group_actions[0].choices["sim"])  # noqa: SLF001
        except ImportError:
            pass
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_settings()  # fail early on a malformed environment
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
