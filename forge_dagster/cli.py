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
from forge_dagster.core.secrets import install_redaction


def _announce(runtime) -> None:
    print(runtime.describe(), file=sys.stderr, flush=True)


def cmd_submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forge_dagster.core.inbox import intake_file
    from forge_dagster.core.processors import load_processors

    catalog = load_processors()
    runtime, store = open_store()
    _announce(runtime)
    with store:
        report = intake_file(store, catalog, Path(args.file), source=args.source)
    if args.json:
        print(json.dumps({"accepted": report.accepted, "rejected": report.rejected}))
    else:
        print(f"accepted {report.accepted} jobs, rejected {len(report.rejected)} lines")
        for r in report.rejected:
            print(f"  line {r['line']}: {r['error']}")
    return 0 if not report.rejected else 1


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


def cmd_dev(args: argparse.Namespace) -> int:
    import os
    import subprocess

    settings = load_settings()
    from forge_dagster.core.runtime import bring_up

    runtime = bring_up(settings, dagster=True)
    _announce(runtime)
    children = []
    env = dict(os.environ)
    if settings.providers_simulated:
        env["FORGE_SIMULATOR_URL"] = f"http://127.0.0.1:{args.sim_port}"
        children.append(subprocess.Popen([sys.executable, "-m", "forge_dagster.cli", "sim", "--port",
                                          str(args.sim_port)], env=env))
    try:
        return subprocess.call(["dagster", "dev", "-m", "forge_dagster.definitions", "-h", "127.0.0.1",
                                "-p", str(args.port)], env=env)
    finally:
        for child in children:
            child.terminate()


def cmd_stop(args: argparse.Namespace) -> int:
    from forge_dagster.core.runtime import stop_embedded_postgres

    home = load_settings().forge_home
    print("stopped the embedded PostgreSQL" if stop_embedded_postgres(home) else "no embedded PostgreSQL running")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from forge_dagster.simulator import config_from_args, serve

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("dev", help="start the Dagster webserver and daemon on Forge's storage")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--sim-port", type=int, default=8700)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("stop", help="stop the embedded PostgreSQL under FORGE_HOME")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("sim", help="run the provider SIMULATOR (a test double, not a provider)")
    from forge_dagster.simulator import add_cli_arguments

    add_cli_arguments(p, include_server=True)
    p.set_defaults(func=cmd_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()  # keys never reach a log line
    load_settings()  # fail early on a malformed environment
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
