"""`forge console`: the operator's web console (server-rendered pages over the store) on 127.0.0.1:8790.

Any other bind address needs FORGE_CONSOLE_TOKEN (the console refuses to start without it); actions need
the token whatever the address.
"""

from __future__ import annotations

import argparse
import sys

from forge_dagster.cli.common import fail, open_announced
from forge_dagster.core.config import load_settings

TOKEN_ENV = "FORGE_CONSOLE_TOKEN"


def cmd_console(args: argparse.Namespace) -> int:
    import uvicorn

    from forge_dagster.console import ConsoleConfig, create_app
    from forge_dagster.console.security import ConsoleRefused, check_bind

    settings = load_settings()
    token = settings.console_token.get_secret_value() if settings.console_token else None
    try:
        check_bind(args.host, token)
    except ConsoleRefused as exc:
        return fail(str(exc), 2)
    store = open_announced(pool_size=6)
    config = ConsoleConfig(token=token, dagster_url=args.dagster_url,
                           dagster_daemons=bool(args.dagster_url or settings.dagster_home))
    with store:
        print(f"forge: console on http://{args.host}:{args.port}"
              + ("" if token else " (read-only: set FORGE_CONSOLE_TOKEN to act)"), file=sys.stderr, flush=True)
        uvicorn.run(create_app(store, config), host=args.host, port=args.port, log_level="warning",
                    access_log=False)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("console", help="the operator's web console (127.0.0.1:8790 by default)")
    p.add_argument("--port", type=int, default=8790)
    p.add_argument("--host", default="127.0.0.1", help=f"any address but loopback needs {TOKEN_ENV}")
    p.add_argument("--dagster-url", default=None, help="Dagster's UI, for links to runs (forge dev sets it)")
    p.set_defaults(func=cmd_console)
