"""Parsing intake files: one JSON object per line, each checked on its own.

A bad line gives an error with its line number; the good lines still go through. A file that is not UTF-8
at all (UTF-16 or UTF-32) is refused whole, naming its encoding; a UTF-8 byte-order mark is accepted.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from forge_dagster.core.models import (
    MAX_ATTEMPTS_LIMIT,
    MAX_PAYLOAD_BYTES,
    JobSpec,
    callback_url_problem,
    settle_mode,
)
from forge_dagster.core.ops.callback_policy import CallbackPolicy


class IntakeLine(BaseModel):
    """The shape of one intake line. `due_at` is an ISO-8601 time with its offset
    (`2030-01-01T09:00:00Z`): an `auto` processor runs work due soon in realtime."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(default=None, min_length=1, max_length=200)
    processor: str = Field(min_length=1, max_length=200)
    input: dict[str, Any]
    processor_version: str | None = Field(default=None, min_length=1, max_length=200)
    mode: Literal["batch", "realtime", "handler"] | None = None
    max_attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS_LIMIT)
    callback_url: str | None = Field(default=None, max_length=2000)
    due_at: AwareDatetime | None = Field(default=None, strict=False)

    @field_validator("callback_url")
    @classmethod
    def _deliverable_callback(cls, url: str | None) -> str | None:
        problem = url and callback_url_problem(url)
        if problem:
            raise ValueError(problem.removeprefix("callback_url "))
        return url


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based
    error: str


@dataclass
class ParsedIntake:
    specs: list[JobSpec] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line number of each spec
    errors: list[LineError] = field(default_factory=list)


class UnreadableFile(ValueError):
    """An intake file that cannot be taken in at all; the message names the problem."""


# Longest first: UTF-32LE's mark begins with UTF-16LE's.
_FOREIGN_BOMS = [(codecs.BOM_UTF32_LE, "UTF-32LE"), (codecs.BOM_UTF32_BE, "UTF-32BE"),
                 (codecs.BOM_UTF16_LE, "UTF-16LE"), (codecs.BOM_UTF16_BE, "UTF-16BE")]
# Without a mark, where the NUL bytes fall in the first four says it (RFC 4627 section 3): JSON text starts
# with an ASCII character, and UTF-8 JSON never holds a raw NUL byte. The pairs: files of 2 or 3 bytes.
_NUL_PATTERNS = {(1, 1, 1, 0): "UTF-32BE", (0, 1, 1, 1): "UTF-32LE", (1, 0, 1, 0): "UTF-16BE",
                 (0, 1, 0, 1): "UTF-16LE", (1, 0): "UTF-16BE", (0, 1): "UTF-16LE"}


def _foreign_encoding(head: bytes) -> str | None:
    """The encoding other than UTF-8 that a JSONL file's first bytes show (a UTF-16 or UTF-32 byte-order
    mark, or the NUL bytes of ASCII in those encodings), else None."""
    for bom, name in _FOREIGN_BOMS:
        if head.startswith(bom):
            return name
    nuls = tuple(int(b == 0) for b in head[:4])
    return _NUL_PATTERNS.get(nuls if len(nuls) == 4 else nuls[:2])


def file_lines(data: bytes) -> list[bytes]:
    """The lines of an intake file, for `parse_lines`: a UTF-8 byte-order mark is dropped; a file in UTF-16
    or UTF-32 raises UnreadableFile naming it (bytes that are not UTF-8 inside a line refuse that line)."""
    encoding = _foreign_encoding(data[:4])
    if encoding:
        raise UnreadableFile(f"wrong encoding ({encoding}; Forge reads UTF-8)")
    return data.removeprefix(codecs.BOM_UTF8).splitlines()


# Given a processor name, optional version, the input and when it is due, return (pinned version, mode)
# or raise ValueError saying what is wrong (unknown processor, input that does not fit its template).
ProcessorCheck = Callable[[str, str | None, dict[str, Any], datetime | None], tuple[str | None, str]]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "line"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_lines(
    lines: Iterable[str | bytes], *, check_processor: ProcessorCheck | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES, callback_policy: CallbackPolicy | None = None,
) -> ParsedIntake:
    """Parse JSONL intake lines into job specs and per-line errors. Blank lines are ignored. Without
    `check_processor`, a line with no mode leaves it to the store, which routes it by its processor.
    A callback_url the policy refuses without a lookup (a literal private address...) refuses its line;
    the policy is the environment's (`FORGE_CALLBACK_ALLOW`) unless one is given."""
    policy = callback_policy if callback_policy is not None else CallbackPolicy.from_environ()
    parsed = ParsedIntake()
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            parsed.errors.append(LineError(number, f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column "
                                                    f"{exc.start + 1}"))
            continue
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
        refused = line.callback_url and policy.intake_problem(line.callback_url)
        if refused:
            parsed.errors.append(LineError(number, refused))
            continue
        version, mode = line.processor_version, line.mode
        if check_processor is not None:
            try:
                version, default_mode = check_processor(line.processor, line.processor_version, line.input,
                                                        line.due_at)
                mode = settle_mode(default_mode, line.mode)
            except ValueError as exc:
                parsed.errors.append(LineError(number, str(exc)))
                continue
        parsed.specs.append(JobSpec(
            processor=line.processor, payload=line.input, external_id=line.id, processor_version=version,
            mode=mode, max_attempts=line.max_attempts, callback_url=line.callback_url, due_at=line.due_at,
        ))
        parsed.lines.append(number)
    return parsed
