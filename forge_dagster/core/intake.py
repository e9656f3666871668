"""Parsing intake files: one JSON object per line, each checked on its own.

A bad line gives an error with its line number; the good lines still go through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge_dagster.core.store import JobSpec

MAX_PAYLOAD_BYTES = 256 * 1024


class IntakeLine(BaseModel):
    """The shape of one intake line."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(default=None, min_length=1, max_length=200)
    processor: str = Field(min_length=1, max_length=200)
    input: dict[str, Any]
    processor_version: str | None = None
    mode: Literal["batch", "realtime"] | None = None
    max_attempts: int = Field(default=3, ge=1, le=20)
    callback_url: str | None = Field(default=None, max_length=2000)


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based
    error: str


@dataclass
class ParsedIntake:
    specs: list[JobSpec] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line number of each spec
    errors: list[LineError] = field(default_factory=list)


# Given a processor name, optional version and the input, return (pinned version, mode) or raise
# ValueError saying what is wrong (unknown processor, input that does not fit its template).
ProcessorCheck = Callable[[str, str | None, dict[str, Any]], tuple[str | None, str]]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "line"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_lines(
    lines: Iterable[str | bytes], *, check_processor: ProcessorCheck | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> ParsedIntake:
    """Parse JSONL intake lines into job specs and per-line errors. Blank lines are ignored."""
    parsed = ParsedIntake()
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        if len(text.encode()) > max_payload_bytes:
            parsed.errors.append(LineError(number, f"line is {len(text.encode())} bytes, over the "
                                                    f"{max_payload_bytes} byte limit"))
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            parsed.errors.append(LineError(number, f"not valid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(data, dict):
            parsed.errors.append(LineError(number, f"expected a JSON object, got {type(data).__name__}"))
            continue
        try:
            line = IntakeLine.model_validate(data)
        except ValidationError as exc:
            parsed.errors.append(LineError(number, _describe(exc)))
            continue
        version, mode = line.processor_version, line.mode or "batch"
        if check_processor is not None:
            try:
                version, default_mode = check_processor(line.processor, line.processor_version, line.input)
            except ValueError as exc:
                parsed.errors.append(LineError(number, str(exc)))
                continue
            mode = line.mode or default_mode
        parsed.specs.append(JobSpec(
            processor=line.processor, payload=line.input, external_id=line.id, processor_version=version,
            mode=mode, max_attempts=line.max_attempts, callback_url=line.callback_url,
        ))
        parsed.lines.append(number)
    return parsed
