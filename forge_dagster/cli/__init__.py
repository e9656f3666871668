"""The `forge` command: one module per command group, each adding its subcommands to the parser.

A command imports what it needs when it runs (inside its function): `forge status` should not pay for the
provider SDKs, pandas or Dagster that other commands load.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from forge_dagster.cli import batches, console, costs, estimate, jobs, nightly, processors, services, work
from forge_dagster.core.config import load_settings
from forge_dagster.core.secrets import install_redaction

GROUPS = (work, services, jobs, batches, nightly, processors, costs, estimate, console)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge", description="Forge: LLM work as real infrastructure.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()  # keys never reach a log line
    load_settings()  # fail early on a malformed environment
    return args.func(args)
