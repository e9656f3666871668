"""`python -m forge_dagster.simulator --port 8700 --latency-ms 50 ...`: run the simulator (a test double)."""

from __future__ import annotations

import argparse

from forge_dagster.simulator.config import add_cli_arguments, config_from_args
from forge_dagster.simulator.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m forge_dagster.simulator",
        description="Forge provider SIMULATOR (test double, not a provider): OpenAI, Anthropic, Ollama and "
        "Slack-webhook wire formats with fault injection.",
    )
    add_cli_arguments(parser, include_server=True)
    ns = parser.parse_args(argv)
    try:
        config = config_from_args(ns)
    except ValueError as exc:
        parser.error(str(exc))
    serve(host=ns.host, port=ns.port, seed=ns.seed, config=config)


if __name__ == "__main__":
    main()
