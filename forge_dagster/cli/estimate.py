"""`forge estimate FILE.jsonl`: what an intake file would cost before it is submitted, and whether today's
budgets admit it (core/platform/estimates.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from forge_dagster.cli.common import fail, open_announced, table


def cmd_estimate(args: argparse.Namespace) -> int:
    from forge_dagster.core.intake.lines import UnreadableFile, file_lines, parse_lines
    from forge_dagster.core.intake.routing import processor_check
    from forge_dagster.core.platform.estimates import estimate_with_budgets
    from forge_dagster.core.platform.registry import load_catalog

    try:
        lines = file_lines(Path(args.file).read_bytes())
    except (OSError, UnreadableFile) as exc:
        return fail(f"{args.file}: {exc}")
    with open_announced() as store:
        catalog = load_catalog(store)
        parsed = parse_lines(lines, check_processor=processor_check(catalog))
        estimate = estimate_with_budgets(store, catalog, parsed.specs)
    estimate.refused[:0] = [f"line {e.line}: {e.error}" for e in parsed.errors]
    if args.json:
        print(json.dumps(estimate.as_dict()))
        return 0 if estimate.admitted else 3
    rows = [{"processor": f"{p.processor} {p.version}", "model": f"{p.provider}/{p.model}", "mode": p.mode,
             "requests": p.requests, "tokens/request": round(p.input_tokens / p.requests, 1),
             "prefix": p.prefix_tokens, "output (max)": p.output_tokens,
             "realtime": _usd(p.realtime_usd, p.priced), "batch": _usd(p.batch_usd, p.priced),
             "realtime cached": _usd(p.realtime_cached_usd, p.priced),
             "batch cached": _usd(p.batch_cached_usd, p.priced), "cache:": "on" if p.caches else "off",
             "tokenizer": p.tokenizer} for p in estimate.processors]
    print(table(rows))
    print(f"total: {estimate.requests} requests; realtime ${estimate.total('realtime_usd'):.6f}, "
          f"batch ${estimate.total('batch_usd'):.6f}; with caching: realtime "
          f"${estimate.total('realtime_cached_usd'):.6f}, batch ${estimate.total('batch_cached_usd'):.6f} "
          "(worst case: every request's full max_tokens of output)")
    for p in estimate.processors:
        if not p.priced:
            print(f"{p.processor}: no price for {p.provider}/{p.model}; its cost is not estimated")
    for verdict in estimate.budgets:
        print(verdict.describe())
    for refusal in estimate.refused:
        print(f"refused: {refusal}")
    return 0 if estimate.admitted else 3


def _usd(value, priced: bool) -> str:
    return f"${value:.6f}" if priced else "unpriced"


def add_commands(sub) -> None:
    p = sub.add_parser("estimate", help="tokens and cost of an intake file before it is sent, and the budget's "
                                        "verdict (exit 3 when a budget would refuse it)")
    p.add_argument("file", help="an intake JSONL file, as `forge submit` takes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)
