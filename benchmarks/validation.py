"""Validation: provider results accepted or rejected per second on the fail-closed path, beside parsing alone.

    python -m benchmarks.validation [--results N] [--repeat R]

Input: OpenAI batch output lines for the ticket_triage processor (chat completions whose content is the
JSON the processor's schema asks for). Forge: `json.loads` of the line, `openai_batch_item` (status,
stop reason, usage) and `validate_result` (the output policy's parse, the compiled schema check, and
jsonschema's messages for any rejection). References: parsing alone (the line and its content with
`json.loads`), and parsing plus jsonschema's own `is_valid` (what validation costs without the compiled
schema). One row has every result valid, one has 10% schema violations that must be rejected.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from benchmarks.report import Ratio, Row, render_table
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.platform.validation import validate_result
from forge_dagster.core.providers.results import openai_batch_item

PROCESSOR = "ticket_triage"
CATEGORIES = ["billing", "bug", "account", "feature_request", "how_to", "other"]
PRIORITIES = ["low", "medium", "high", "urgent"]


def output_lines(n: int, violation_every: int | None) -> list[str]:
    """`n` OpenAI output lines; every `violation_every`-th output breaks the schema (an unknown priority)."""
    lines = []
    for i in range(n):
        output = {"category": CATEGORIES[i % 6], "priority": PRIORITIES[i % 4],
                  "summary": f"Customer {i} reports that the CSV export fails after the last update."}
        if violation_every and i % violation_every == 0:
            output["priority"] = "whenever"
        body = {
            "id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(output), "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
            "system_fingerprint": "fp_sim",
        }
        line = {"id": f"batch_req_{i}", "custom_id": f"j{i + 1}a1",
                "response": {"status_code": 200, "request_id": f"req_{i}", "body": body}, "error": None}
        lines.append(json.dumps(line))
    return lines


def forge_path(lines: list[str]) -> int:
    processor = load_processors()[PROCESSOR]
    return sum(validate_result(openai_batch_item(json.loads(line)), processor).accepted for line in lines)


def parse_only(lines: list[str]) -> int:
    return sum(isinstance(json.loads(json.loads(line)["response"]["body"]["choices"][0]["message"]["content"]), dict)
               for line in lines)


def parse_and_jsonschema(lines: list[str]) -> int:
    validator = load_processors()[PROCESSOR].schema_validator
    return sum(validator.is_valid(json.loads(json.loads(line)["response"]["body"]["choices"][0]["message"]["content"]))
               for line in lines)


def _rate(fn: Callable[[list[str]], int], lines: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    accepted = fn(lines)
    return len(lines) / (time.perf_counter() - started), accepted


def rows(*, results: int, repeat: int) -> list[Row]:
    out = []
    forge_path(output_lines(10, None))  # processors loaded, schema compiled: a worker's steady state
    for violation_every, tag in ((None, "all valid"), (10, "10% invalid")):
        lines = output_lines(results, violation_every)
        expected = results - (len(range(0, results, violation_every)) if violation_every else 0)
        samples: dict[str, list[float]] = {"forge": [], "parse": [], "jsonschema": []}
        for _ in range(repeat):
            for name, fn in (("forge", forge_path), ("parse", parse_only), ("jsonschema", parse_and_jsonschema)):
                rate, accepted = _rate(fn, lines)
                if name != "parse" and accepted != expected:
                    raise RuntimeError(f"{name}: accepted {accepted} of {results}, expected {expected}")
                samples[name].append(rate)
        what = f"{results:,} OpenAI result lines, {tag}"
        out += [
            Row("validation", f"forge validate_result ({tag})",
                f"{what}: parse, normalise, fail-closed checks, compiled schema (+ jsonschema messages on reject)",
                "results/s", samples["forge"],
                [Ratio.paired("parse alone", samples["forge"], samples["parse"]),
                 Ratio.paired("parse + jsonschema", samples["forge"], samples["jsonschema"])]),
            Row("validation", f"parse alone ({tag})", f"{what}: json.loads of the line and of its content",
                "results/s", samples["parse"]),
            Row("validation", f"parse + jsonschema ({tag})", f"{what}: json.loads twice + Draft202012 is_valid",
                "results/s", samples["jsonschema"]),
        ]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(render_table(rows(results=args.results, repeat=args.repeat)))


if __name__ == "__main__":
    main()
