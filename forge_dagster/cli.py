"""The `forge` command: submit, work, status, demo, sim, dev.

Every command prints one line (on stderr) saying which mode it runs in (PostgreSQL, Redis, providers);
`--json` output goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from forge_dagster.cli_platform import add_platform_commands
from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import mode_line, open_store
from forge_dagster.core.secrets import install_redaction


def _announce(runtime=None) -> None:
    """Print the mode line: of the runtime a command brought up, else of the settings (starting nothing)."""
    print(runtime.describe() if runtime is not None else mode_line(load_settings()), file=sys.stderr, flush=True)


def cmd_submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forge_dagster.core.inbox import intake_file
    from forge_dagster.core.intake import UnreadableFile
    from forge_dagster.core.processor_registry import load_catalog

    runtime, store = open_store()
    _announce(runtime)
    with store:
        try:
            report = intake_file(store, load_catalog(store), Path(args.file), source=args.source)
        except UnreadableFile as exc:
            print(f"forge submit: {args.file}: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps({"accepted": report.accepted, "rejected": report.rejected}))
    else:
        print(f"accepted {report.accepted} jobs, rejected {len(report.rejected)} lines")
        for r in report.rejected:
            print(f"  line {r['line']}: {r['error']}")
    return 0 if not report.rejected else 1


def cmd_work(args: argparse.Namespace) -> int:
    """LLM jobs through the providers by default; `--handler` runs a declared non-LLM step instead."""
    from forge_dagster.core.costs import PricesFileError, active_prices
    from forge_dagster.core.relay import background_relay, build_relay

    try:
        active_prices()  # a wrong FORGE_PRICES_FILE stops a worker at start, naming the file and the entry
    except PricesFileError as exc:
        print(f"forge work: {exc}", file=sys.stderr)
        return 2
    runtime, store = open_store(pool_size=args.concurrency + 2, wait_s=120.0)  # a worker waits for its database
    _announce(runtime)
    with store:
        worker = _handler_worker(store, args) if args.handler else None
        if args.handler and worker is None:
            return 2
        with background_relay(build_relay(store, forge_home=load_settings().forge_home)) as relay:
            print(relay.describe(), file=sys.stderr, flush=True)  # the outbox drains beside the claim loop
            if worker is not None:
                stats = worker.run(until_idle=args.until_idle)
            else:  # provider calls on asyncio within each key's rate limits (core/realtime)
                from forge_dagster.core.realtime.service import run_realtime_worker

                stats = run_realtime_worker(store, concurrency=args.concurrency, until_idle=args.until_idle)
    print(json.dumps({"claimed": stats.claimed, "succeeded": stats.succeeded, "failed": stats.failed,
                      "lease_lost": stats.lease_lost}))
    return 0


def _handler_worker(store, args: argparse.Namespace):
    """The claim loop for `--handler module:function` over the processors that declare it, or None (said
    on stderr) when none does or the handler cannot be imported."""
    from forge_dagster.core.processor_registry import load_catalog
    from forge_dagster.core.processors import import_handler
    from forge_dagster.core.worker import Worker

    declaring = [p for p in load_catalog(store).all() if p.handler == args.handler]
    if not declaring:
        print(f"forge work: no processor declares handler {args.handler!r}: a handler runs only the jobs of "
              "processors that name it (`handler: module:function` in their YAML)", file=sys.stderr)
        return None
    try:
        handler = import_handler(args.handler)
    except ValueError as exc:
        print(f"forge work: handler {args.handler!r}: {exc}", file=sys.stderr)
        return None
    names = ", ".join(sorted({f"{p.name} {p.version}" for p in declaring}))
    print(f"forge work: handler {args.handler} runs the jobs of {names}", file=sys.stderr, flush=True)
    return Worker(store, handler, declaring, concurrency=args.concurrency)


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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace) -> int:
    import os
    import signal
    import subprocess

    from forge_dagster.core.runtime import bring_up
    from forge_dagster.dagster_instance import apply_pool_limits

    settings = load_settings()
    runtime = bring_up(settings, dagster=True)
    _announce(runtime)
    apply_pool_limits(runtime.dagster_home)
    env = dict(os.environ)
    children = []
    if settings.providers_simulated:
        env["FORGE_SIMULATOR_URL"] = f"http://127.0.0.1:{args.sim_port}"
        children.append(subprocess.Popen([sys.executable, "-m", "forge_dagster.cli", "sim", "--port",
                                          str(args.sim_port)], env=env))
    children.append(subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-m", "forge_dagster.definitions", "-h", "127.0.0.1",
                                      "-p", str(args.port)], env=env))
    # A SIGTERM (as from `timeout` or a service manager) stops the children too.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return children[-1].wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGINT if child is children[-1] else signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def cmd_health(args: argparse.Namespace) -> int:
    from forge_dagster.core.health import as_json, format_checks, run_checks

    _announce()
    checks = run_checks(load_settings(), skip=tuple(args.skip))
    print(json.dumps(as_json(checks)) if args.json else format_checks(checks))
    return 1 if any(c.down for c in checks) else 0


def cmd_metrics(args: argparse.Namespace) -> int:
    import threading

    from forge_dagster.core import metrics

    runtime, store = open_store(dagster=False, pool_size=2)
    _announce(runtime)
    with store:
        server, _ = metrics.serve(store, port=args.port, host=args.host)
        print(f"forge: Prometheus metrics on http://{args.host}:{server.server_port}/metrics", file=sys.stderr,
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from forge_dagster.core.runtime import stop_embedded_postgres

    _announce()
    home = load_settings().forge_home
    print("stopped the embedded PostgreSQL" if stop_embedded_postgres(home) else "no embedded PostgreSQL running")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from forge_dagster.simulator import config_from_args, serve

    print(f"forge: mode=simulator (the provider SIMULATOR, a test double, not a provider, on http://{args.host}:"
          f"{args.port}; it uses no PostgreSQL or Redis)", file=sys.stderr, flush=True)
    serve(host=args.host, port=args.port, seed=args.seed, config=config_from_args(args))
    return 0


def cmd_memories(args: argparse.Namespace) -> int:
    from forge_dagster.core.knowledge import format_memory, search

    runtime, store = open_store(dagster=False, pool_size=1)
    _announce(runtime)
    with store:
        found = search(store.knowledge, args.query, limit=args.limit, tag=args.tag, include_compressed=args.all)
    if args.json:
        print(json.dumps([m.to_dict() for m in found]))
    else:
        print("\n".join(format_memory(m) for m in found) or f"no memories match {args.query!r}")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forge_dagster.core.adapters import AdapterError, AdapterRegistry

    registry = AdapterRegistry(load_settings().forge_home / "adapters")
    _announce()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge", description="Forge: LLM work as real infrastructure.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="enqueue the jobs of a JSONL file (one job per line)")
    p.add_argument("file")
    p.add_argument("--source", default="file", help="intake source name (ids are unique per source)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("work", help="run realtime LLM jobs through the providers in this process (or, with "
                                     "--handler, the jobs of the processors that declare that handler)")
    p.add_argument("--concurrency", type=int, default=4, help="provider calls (or handler calls) in flight")
    p.add_argument("--until-idle", action="store_true", help="stop when no job this worker runs is open")
    p.add_argument("--handler", metavar="MODULE:FUNCTION",
                   help="run a non-LLM step instead: only jobs of processors whose YAML says `handler: "
                        "MODULE:FUNCTION`; what it returns is validated against their schema")
    p.add_argument("--realtime", action="store_true", help=argparse.SUPPRESS)  # the default; kept for scripts
    p.set_defaults(func=cmd_work)

    p = sub.add_parser("status", help="jobs and batches by state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("health", help="check PostgreSQL, Redis, provider keys, Ollama, the Dagster daemon, the outbox")
    p.add_argument("--json", action="store_true")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help="leave a check out: postgres, redis, providers, ollama, dagster_daemon, outbox")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("metrics", help="serve Prometheus metrics (127.0.0.1 by default)")
    p.add_argument("--port", type=int, default=9464)
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_metrics)

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
    add_platform_commands(sub)  # processors, costs, budgets, export (cli_platform.py)
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
