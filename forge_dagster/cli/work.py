"""`forge submit | work | status`: jobs in, work run in this process, counts out."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

from forge_dagster.cli.common import announce, open_announced
from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import open_store


def cmd_submit(args: argparse.Namespace) -> int:
    from forge_dagster.core.intake.inbox import intake_file
    from forge_dagster.core.intake.lines import UnreadableFile
    from forge_dagster.core.platform.registry import load_catalog

    store = open_announced()
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
    """LLM jobs through the providers by default; `--handler` runs a declared non-LLM step instead. SIGTERM
    (a rolling update) or SIGINT stops either cleanly: no new claim, work in flight finished or released,
    the outbox drained once more, the stats printed, exit 0."""
    from forge_dagster.core.ops.fleet import on_the_fleet  # the console's live fleet sees this process
    from forge_dagster.core.ops.relay import background_relay, build_relay
    from forge_dagster.core.platform.pricing import PricesFileError, active_prices
    from forge_dagster.core.realtime.service import run_realtime_worker, stop_on_signals

    try:
        active_prices()  # a wrong FORGE_PRICES_FILE stops a worker at start, naming the file and the entry
    except PricesFileError as exc:
        print(f"forge work: {exc}", file=sys.stderr)
        return 2
    from forge_dagster.core.realtime.supervisor import default_processes

    processes = args.processes if args.processes is not None else 1
    processes = processes or default_processes()  # --processes 0: one per core this process may use
    if processes > 1:
        return _supervise(args, processes)
    store = open_announced(pool_size=args.concurrency + 2, wait_s=120.0)  # a worker waits for its database
    with store:
        worker = _handler_worker(store, args) if args.handler else None
        if args.handler and worker is None:
            return 2
        stop = threading.Event()
        restore = stop_on_signals(stop)
        try:
            kind, detail = ("handler", args.handler) if args.handler else ("realtime", f"concurrency {args.concurrency}")
            with on_the_fleet(store, kind, detail=detail), \
                    background_relay(build_relay(store, forge_home=load_settings().forge_home)) as relay:
                print(relay.describe(), file=sys.stderr, flush=True)  # the outbox drains beside the claim loop
                if worker is not None:  # handlers in flight finish and are recorded once stopped
                    stats = worker.run(until_idle=args.until_idle, stop=stop)
                else:  # provider calls on asyncio within each key's rate limits (core/realtime)
                    stats = run_realtime_worker(store, concurrency=args.concurrency, until_idle=args.until_idle,
                                                stop=stop, drain_s=args.drain_s)
        finally:
            restore()
    print(json.dumps({"claimed": stats.claimed, "succeeded": stats.succeeded, "failed": stats.failed,
                      "lease_lost": stats.lease_lost}))
    return 0


def _supervise(args: argparse.Namespace, processes: int) -> int:
    """`--processes N`: N `forge work` processes (each `--processes 1`) under one supervisor that restarts a
    dead one and passes SIGTERM / SIGINT on to all (core/realtime/supervisor.py); their stats summed."""
    from forge_dagster.core.realtime.service import stop_on_signals
    from forge_dagster.core.realtime.supervisor import Supervisor, SupervisorPolicy

    argv = [sys.executable, "-m", "forge_dagster.cli", *(["--verbose"] if getattr(args, "verbose", False) else []),
            "work", "--processes", "1", "--concurrency", str(args.concurrency)]
    argv += ["--until-idle"] if args.until_idle else []
    argv += ["--handler", args.handler] if args.handler else []
    argv += ["--drain-s", str(args.drain_s)] if args.drain_s is not None else []
    supervisor = Supervisor(argv, processes, SupervisorPolicy(grace_s=(args.drain_s or 10.0) + 20.0))
    print(f"forge work: {processes} worker processes under one supervisor (pid {os.getpid()})", file=sys.stderr,
          flush=True)
    stop = threading.Event()
    restore = stop_on_signals(stop)
    try:
        code = supervisor.run(stop)
    finally:
        restore()
    print(json.dumps({"claimed": 0, "succeeded": 0, "failed": 0, "lease_lost": 0, **supervisor.totals(),
                      "processes": processes, "restarts": supervisor.restarts}))
    return code


def _handler_worker(store, args: argparse.Namespace):
    """The claim loop for `--handler module:function` over the processors that declare it, or None (said
    on stderr) when none does or the handler cannot be imported."""
    from forge_dagster.core.platform.catalog import import_handler
    from forge_dagster.core.platform.registry import load_catalog
    from forge_dagster.core.realtime.handler_worker import Worker

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
    announce(runtime)
    with store:
        status = {"mode": runtime.mode, "jobs": store.jobs.counts(), "batches": store.batches.counts()}
    if args.json:
        print(json.dumps(status))
    else:
        print(f"jobs: {status['jobs'] or 'none'}\nbatches: {status['batches'] or 'none'}")
    return 0




def add_commands(sub) -> None:
    p = sub.add_parser("submit", help="enqueue the jobs of a JSONL file (one job per line)")
    p.add_argument("file")
    p.add_argument("--source", default="file", help="intake source name (ids are unique per source)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("work", help="run realtime LLM jobs through the providers in this process (or, with "
                                     "--handler, the jobs of the processors that declare that handler)")
    p.add_argument("--concurrency", type=int, default=4, help="provider calls (or handler calls) in flight")
    p.add_argument("--until-idle", action="store_true", help="stop when no job this worker runs is open")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="worker processes under one supervisor, each with --concurrency calls in flight; a dead "
                        "one is restarted, SIGTERM stops them all (default 1; 0: the cores this process may use, "
                        "within a container's CPU limit)")
    p.add_argument("--handler", metavar="MODULE:FUNCTION",
                   help="run a non-LLM step instead: only jobs of processors whose YAML says `handler: "
                        "MODULE:FUNCTION`; what it returns is validated against their schema")
    p.add_argument("--drain-s", type=float, default=None, metavar="SECONDS",
                   help="on SIGTERM, how long realtime calls in flight may finish before their jobs are released "
                        "(default 10; keep it under the orchestrator's grace period)")
    p.add_argument("--realtime", action="store_true", help=argparse.SUPPRESS)  # the default; kept for scripts
    p.set_defaults(func=cmd_work)

    p = sub.add_parser("status", help="jobs and batches by state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

