"""Shaping: building OpenAI batch files of rendered requests, beside writing the same lines with json alone.

    python -m benchmarks.shaping [--requests N] [--repeat R]

Forge: `shape_batches` (group, size every request, cut within the provider's count and byte limits) and
then the file content each batch uploads (`wire.encode_line` per request, as the OpenAI port does).
Reference: `json.dumps` of the same line dicts, joined: the bytes with no shaping at all. Both produce
identical bytes (checked); MB/s counts those bytes. No database; requests are rendered beforehand.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.report import Ratio, Row, render_table
from forge_dagster.core.batch.shaping import custom_id_for, group_key, shape_batches
from forge_dagster.core.models import Provider, ProviderRequest
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.providers.wire import encode_line, openai_batch_line

PROCESSOR = "ticket_triage"  # OpenAI, json_schema response format


def rendered_requests(n: int) -> tuple[list[tuple], list[ProviderRequest]]:
    processor = load_processors()[PROCESSOR]
    key = group_key(processor.provider, processor.model, processor.name, processor.version)
    requests = [render_request(processor, {"subject": f"Ticket {i}", "body": f"Export {i} fails with error E{i % 97}."},
                                         custom_id_for(i + 1, 1)) for i in range(n)]
    return [(key, r) for r in requests], requests


def forge_files(items: list[tuple]) -> list[bytes]:
    """What the builder and the OpenAI port do: shape, then one JSONL file per batch."""
    return [b"".join(encode_line(Provider.OPENAI, r) for r in batch.requests) for batch in shape_batches(items)]


def json_only(requests: list[ProviderRequest]) -> bytes:
    return "".join(json.dumps(openai_batch_line(r), separators=(",", ":"), ensure_ascii=False) + "\n"
                   for r in requests).encode()


def rows(*, requests: int, repeat: int) -> list[Row]:
    items, plain = rendered_requests(requests)
    expected = json_only(plain)
    if b"".join(forge_files(items)) != expected:
        raise RuntimeError("shaped batch files differ from the json-only lines")
    mb = len(expected) / 1e6
    forge, reference = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        forge_files(items)
        forge.append(mb / (time.perf_counter() - started))
        started = time.perf_counter()
        json_only(plain)
        reference.append(mb / (time.perf_counter() - started))
    what = f"{requests:,} rendered OpenAI requests ({mb:.1f} MB) into batch JSONL bytes"
    return [
        Row("shaping", "forge shape + encode", f"{what}: shape_batches + wire.encode_line", "MB/s", forge,
            [Ratio.paired("json.dumps alone", forge, reference)]),
        Row("shaping", "json.dumps alone", f"{what}: json.dumps per line, joined", "MB/s", reference),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(render_table(rows(requests=args.requests, repeat=args.repeat)))


if __name__ == "__main__":
    main()
