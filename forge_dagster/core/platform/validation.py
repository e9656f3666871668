"""Fail-closed acceptance of provider results (DESIGN.md section 6).

A result is accepted only when it succeeded with HTTP 200, was not truncated nor refused, parses under the
processor's output policy and validates against its pinned JSON Schema (Draft 2020-12). Everything else is
rejected with the validator's errors and whether a retry could help.

An embeddings answer is accepted only as a vector of the processor's expected length of finite numbers (the
accepted output then names its length and digest, the vector travels beside it); a moderations answer only
as a result object with a boolean `flagged`, boolean categories and finite scores.

Schema checks run on a hot path (every result of every batch), so each processor's schema is compiled once
into a plain Python predicate (schema_compiler.py); jsonschema stays the reference: it checks any schema
outside the compiled subset and writes the error messages whenever the predicate says no.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forge_dagster.core.models import AcceptedOutput, ResultItem, ResultOutcome
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.schema_compiler import compile_schema

TRUNCATED_STOPS = frozenset({"length", "max_tokens", "model_context_window_exceeded"})
REFUSED_STOPS = frozenset({"refusal", "content_filter"})
COMPLETE_STOPS = frozenset({None, "stop", "end_turn", "stop_sequence", "tool_use"})
_MAX_MESSAGE = 300
_FAST_CHECK = "validation.fast_check"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one result. `output` is set only when accepted; `reason` is short and machine-ish."""

    accepted: bool
    output: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    retryable: bool = False
    reason: str = "ok"
    vector: bytes | None = None  # an accepted embedding, as little-endian float32 bytes


def _reject(reason: str, *, retryable: bool, errors: list[str] | None = None) -> Verdict:
    return Verdict(False, None, errors if errors is not None else [reason], retryable, reason)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _retryable_status(code: int | None) -> bool:
    return code is not None and (code in (408, 409, 429) or code >= 500)


def _raw_error_text(raw: dict[str, Any] | None) -> str:
    """The provider's error message inside a raw result line, when there is one."""
    if not isinstance(raw, dict):
        return ""
    response = raw.get("response")
    candidates = [raw, raw.get("body"), response.get("body") if isinstance(response, dict) else None]
    for candidate in candidates:
        if isinstance(candidate, dict) and isinstance(candidate.get("error"), dict):
            return str(candidate["error"].get("message", ""))
    return ""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def _parse_json_object(text: str) -> tuple[dict[str, Any] | None, str]:
    try:
        value = _DECODER.decode(text)
    except ValueError:
        return None, "parse: not JSON"
    if not isinstance(value, dict):
        return None, f"parse: JSON is a {type(value).__name__}, not an object"
    return value, ""


def extract_json_object(text: str) -> tuple[dict[str, Any] | None, str]:
    """Exactly one JSON object from prose or from ```json fenced blocks; returns (object, error reason)."""
    fences = _FENCE_RE.findall(text)
    fenced = [body for lang, body in fences if lang.lower() in ("", "json")]
    if fenced:
        found = [obj for obj in (_parse_json_object(body.strip())[0] for body in fenced) if obj is not None]
    else:
        # Prose: every top-level JSON object outside code blocks of other languages.
        prose = _FENCE_RE.sub(" ", text) if fences else text
        found, start = [], prose.find("{")
        while start != -1:
            try:
                value, end = _DECODER.raw_decode(prose, start)
            except ValueError:
                start = prose.find("{", start + 1)
                continue
            found.append(value)
            start = prose.find("{", end)
    if len(found) == 1:
        return found[0], ""
    if not found:
        return None, "parse: no JSON object in text"
    return None, f"parse: {len(found)} JSON objects in text, expected exactly one"


def _parse_output(item: ResultItem, policy: str) -> tuple[dict[str, Any] | None, str]:
    if policy == "json" and item.tool_input is not None:
        if isinstance(item.tool_input, dict):
            return item.tool_input, ""
        return None, "parse: tool input is not an object"
    if item.text is None or (policy != "text" and not item.text.strip()):
        return None, "parse: empty output"
    if policy == "json":
        return _parse_json_object(item.text)
    if policy == "json_in_text":
        return extract_json_object(item.text)
    return {"text": item.text}, ""


def _error_path(error: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def _schema_problems(processor: Processor, output: Any) -> list[tuple[str, str]]:
    validator = processor.schema_validator
    if validator is None:
        return []
    cache = processor.derived
    try:
        check = cache[_FAST_CHECK]
    except KeyError:
        check = cache[_FAST_CHECK] = compile_schema(processor.response_schema)
    if check is not None and check(output):
        return []
    # The fast check said no (or does not cover this schema): jsonschema decides and explains.
    return sorted((_error_path(e), _clip(e.message)) for e in validator.iter_errors(output))


def schema_errors(processor: Processor, output: Any) -> list[str]:
    """Every schema violation of `output`, sorted, each as `path: message` (empty when valid)."""
    return [f"{path}: {message}" for path, message in _schema_problems(processor, output)]


def validate_result(item: ResultItem, processor: Processor) -> Verdict:
    """Accept or reject one provider result for `processor` (fail closed)."""
    if item.outcome is ResultOutcome.REQUEUE:
        return _reject("requeue: did not run to completion", retryable=True)
    if item.outcome is not ResultOutcome.SUCCEEDED:
        error = item.error
        if error is None:
            code = item.status_code
            text = _raw_error_text(item.raw) or "errored"
            return _reject(
                _clip(f"http {code}: {text}" if code else f"errored: {text}"),
                retryable=_retryable_status(code),
            )
        code = error.status_code or item.status_code
        prefix = f"http {code}" if code else str(error.error_class)
        return _reject(_clip(f"{prefix}: {error.message}"), retryable=error.retryable)
    if item.status_code not in (200, None):
        text = _raw_error_text(item.raw) or "non-200 status"
        return _reject(
            _clip(f"http {item.status_code}: {text}"), retryable=_retryable_status(item.status_code)
        )
    stop = item.stop_reason
    if stop not in COMPLETE_STOPS:
        if stop in TRUNCATED_STOPS:
            detail = f"stop_reason {stop} at max_tokens={processor.max_tokens}"
            return _reject(f"truncated: {stop}", retryable=True, errors=[detail])
        if stop in REFUSED_STOPS:
            return _reject("refusal", retryable=False, errors=[f"stop_reason {stop}"])
        return _reject(f"stop: unexpected stop_reason {stop!r}", retryable=False)
    if processor.endpoint == "embeddings":
        return _embedding_verdict(item, processor)
    if processor.endpoint == "moderations":
        return _moderation_verdict(item)
    output, problem = _parse_output(item, processor.output_policy)
    if output is None:
        return _reject(problem, retryable=True)
    problems = _schema_problems(processor, output)
    if problems:
        errors = [f"{path}: {message}" for path, message in problems]
        return _reject(f"schema: {problems[0][1]}", retryable=True, errors=errors)
    return Verdict(True, output, [], False, "ok")


def vector_digest(vector: bytes) -> str:
    """The sha256 of a vector's float32 bytes, as an accepted embedding output records it."""
    return hashlib.sha256(vector).hexdigest()


def _embedding_verdict(item: ResultItem, processor: Processor) -> Verdict:
    """Accept a vector of the expected length whose numbers are all finite (as float32)."""
    if item.vector is None:
        return _reject("embedding: the answer holds no list of numbers", retryable=True)
    values = np.frombuffer(item.vector, dtype="<f4")
    expected = processor.vector_dimensions
    if len(values) != expected:
        return _reject(f"embedding: {len(values)} numbers, expected {expected}", retryable=True)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        return _reject(f"embedding: {len(bad)} numbers are not finite (first at index {bad[0]})", retryable=True)
    output = {"dimensions": expected, "vector_sha256": vector_digest(item.vector)}
    return Verdict(True, output, [], False, "ok", vector=item.vector)


def _moderation_verdict(item: ResultItem) -> Verdict:
    """Accept a moderation result: boolean `flagged`, categories true/false (or null), finite scores."""
    result = item.tool_input
    if not isinstance(result, Mapping):
        return _reject("moderation: the answer holds no result object", retryable=True)
    categories, scores = result.get("categories"), result.get("category_scores")
    errors = []
    if not isinstance(result.get("flagged"), bool):
        errors.append("$.flagged: not a boolean")
    if not isinstance(categories, Mapping) or not all(v is None or isinstance(v, bool) for v in categories.values()):
        errors.append("$.categories: not an object of booleans")
    if not isinstance(scores, Mapping) or not all(
            type(v) in (int, float) and math.isfinite(v) for v in scores.values()):
        errors.append("$.category_scores: not an object of finite numbers")
    if errors:
        return _reject(f"moderation: {errors[0]}", retryable=True, errors=errors)
    output = {"flagged": result["flagged"], "categories": dict(categories), "category_scores": dict(scores)}
    return Verdict(True, output, [], False, "ok")


def validate_output(processor: Processor, output: Any) -> Verdict:
    """Accept or reject an output that is already a value (what a handler returned), as a provider's answer
    is judged: it must be a JSON object and validate against the processor's pinned schema when it has one.
    A handler is deterministic code, so a rejection is final (not retryable)."""
    if not isinstance(output, dict):
        return _reject(f"output is a {type(output).__name__}, not a JSON object", retryable=False)
    try:
        json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return _reject(_clip(f"output is not JSON: {exc}"), retryable=False)
    problems = _schema_problems(processor, output)
    if problems:
        errors = [f"{path}: {message}" for path, message in problems]
        return _reject(f"schema: {problems[0][1]}", retryable=False, errors=errors)
    return Verdict(True, output, [], False, "ok")


def accepted_output(verdict: Verdict, processor: Processor, accepted_by: str) -> AcceptedOutput:
    """The accepted output of an accepting verdict, bound to the processor version it was validated against."""
    if not verdict.accepted or verdict.output is None:
        raise ValueError(f"not accepted ({verdict.reason}): a rejected output cannot succeed a job")
    return AcceptedOutput(verdict.output, processor.name, processor.version, processor.fingerprint, accepted_by,
                          verdict.vector)
