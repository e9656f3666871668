"""`forge demo | dev | stop | sim | health | metrics`: running Forge and its local services."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading

from forge_dagster.cli.common import announce, open_announced
from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import bring_up, stop_embedded_postgres
from forge_dagster.simulator import add_cli_arguments, config_from_args, serve


def cmd_demo(args: argparse.Namespace) -> int:
    from forge_dagster.demo import run_demo

    return run_demo(args)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace) -> int:
    from forge_dagster.dagster_instance import apply_pool_limits  # Dagster: only `forge dev` loads it

    settings = load_settings()
    runtime = bring_up(settings, dagster=True)
    announce(runtime)
    apply_pool_limits(runtime.dagster_home)
    env = dict(os.environ)
    children = []
    if settings.providers_simulated:
        env["FORGE_SIMULATOR_URL"] = f"http://127.0.0.1:{args.sim_port}"
        children.append(subprocess.Popen([sys.executable, "-m", "forge_dagster.cli", "sim", "--port",
                                          str(args.sim_port)], env=env))
    # The operator's console beside Dagster's UI, linking to its runs (it stops with `forge dev`).
    children.append(subprocess.Popen([sys.executable, "-m", "forge_dagster.cli", "console", "--port",
                                      str(args.console_port), "--dagster-url", f"http://127.0.0.1:{args.port}"],
                                     env=env))
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
    from forge_dagster.core.ops.service_checks import as_json, format_checks, run_checks

    announce()
    checks = run_checks(load_settings(), skip=tuple(args.skip))
    print(json.dumps(as_json(checks)) if args.json else format_checks(checks))
    return 1 if any(c.down for c in checks) else 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from forge_dagster.core.ops import metrics

    store = open_announced(dagster=False, pool_size=2)
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
    announce()
    home = load_settings().forge_home
    print("stopped the embedded PostgreSQL" if stop_embedded_postgres(home) else "no embedded PostgreSQL running")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    print(f"forge: mode=simulator (the provider SIMULATOR, a test double, not a provider, on http://{args.host}:"
          f"{args.port}; it uses no PostgreSQL or Redis)", file=sys.stderr, flush=True)
    serve(host=args.host, port=args.port, seed=args.seed, config=config_from_args(args))
    return 0



def add_commands(sub) -> None:
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

    p = sub.add_parser("dev", help="start the Dagster webserver and daemon on Forge's storage, and the console")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--sim-port", type=int, default=8700)
    p.add_argument("--console-port", type=int, default=8790, help="the operator's console (forge console)")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("stop", help="stop the embedded PostgreSQL under FORGE_HOME")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("sim", help="run the provider SIMULATOR (a test double, not a provider)")
    add_cli_arguments(p, include_server=True)
    p.set_defaults(func=cmd_sim)

