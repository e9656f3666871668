"""Fail-closed acceptance of provider results (DESIGN.md section 6).

A result is accepted only when it succeeded with HTTP 200, was not truncated nor refused, parses under the
processor's output policy and validates against its pinned JSON Schema (Draft 2020-12). Everything else is
rejected with the validator's errors and whether a retry could help.

Schema checks run on a hot path (every result of every batch), so each processor's schema is compiled once
into plain Python predicates for the common keyword subset; jsonschema stays the reference: it handles any
schema outside that subset and produces the error messages whenever the fast check says no.
"""

from __future__ import annotations

import json
import numbers
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forge_dagster.core.models import ResultItem, ResultOutcome
from forge_dagster.core.processors import Processor

Check = Callable[[Any], bool]

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
    output, problem = _parse_output(item, processor.output_policy)
    if output is None:
        return _reject(problem, retryable=True)
    problems = _schema_problems(processor, output)
    if problems:
        errors = [f"{path}: {message}" for path, message in problems]
        return _reject(f"schema: {problems[0][1]}", retryable=True, errors=errors)
    return Verdict(True, output, [], False, "ok")


# --- schema compilation -------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """The schema uses a keyword the fast path does not implement; jsonschema checks it instead."""


# Keywords that never affect validity (format is an annotation unless a format checker is configured).
_ANNOTATIONS = frozenset(
    "title description default examples $comment $schema $id format deprecated readOnly writeOnly $defs "
    "definitions contentMediaType contentEncoding".split()
)
_TYPE_TESTS: dict[str, Check] = {
    "string": lambda x: isinstance(x, str),
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": lambda x: isinstance(x, numbers.Number) and not isinstance(x, bool),
    "integer": lambda x: (
        (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, float) and x.is_integer())
    ),
}


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


def _all_of(checks: list[Check]) -> Check:
    if not checks:
        return lambda _x: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda x: first(x) and second(x)

    def check(x: Any) -> bool:
        for c in checks:
            if not c(x):
                return False
        return True

    return check


def _enum_check(members: list[Any]) -> Check:
    """JSON equality as jsonschema's `equal`: bools never equal numbers, 1 == 1.0. Scalars only."""
    if any(isinstance(m, dict | list) for m in members):
        raise _Unsupported("enum of containers")
    strings = frozenset(m for m in members if isinstance(m, str))
    bools = [m for m in members if isinstance(m, bool)]
    others = [m for m in members if not isinstance(m, str | bool)]
    if not bools and not others:
        return lambda x: isinstance(x, str) and x in strings

    def check(x: Any) -> bool:
        if isinstance(x, str):
            return x in strings
        if isinstance(x, bool):
            return x in bools
        return any(x is m or (not isinstance(x, dict | list) and x == m) for m in others)

    return check


def _type_check(spec: str | list[str]) -> Check:
    names = [spec] if isinstance(spec, str) else list(spec)
    tests = [_TYPE_TESTS[n] for n in names]
    return tests[0] if len(tests) == 1 else (lambda x: any(t(x) for t in tests))


def _string_check(s: dict[str, Any]) -> Check:
    lo, hi = s.get("minLength", 0), s.get("maxLength")
    pattern = re.compile(s["pattern"]) if "pattern" in s else None

    def check(x: Any) -> bool:
        if not isinstance(x, str):
            return True
        n = len(x)
        return n >= lo and (hi is None or n <= hi) and (pattern is None or pattern.search(x) is not None)

    return check


_NUMBER_FAILS = {
    "minimum": operator.lt,
    "maximum": operator.gt,
    "exclusiveMinimum": operator.le,
    "exclusiveMaximum": operator.ge,
}


def _number_check(s: dict[str, Any]) -> Check:
    fails = [(op, s[k]) for k, op in _NUMBER_FAILS.items() if k in s]

    def check(x: Any) -> bool:
        if not _is_number(x):
            return True
        for op, bound in fails:
            if op(x, bound):
                return False
        return True

    return check


def _object_check(s: dict[str, Any]) -> Check:
    props = {k: compile_subschema(v) for k, v in s.get("properties", {}).items()}
    required = list(s.get("required", ()))
    extra = s.get("additionalProperties", True)
    extra_check = (
        None if extra is True else (lambda _x: False) if extra is False else compile_subschema(extra)
    )
    lo, hi = s.get("minProperties", 0), s.get("maxProperties")
    prop_items = list(props.items())

    def check(x: Any) -> bool:
        if not isinstance(x, dict):
            return True
        if len(x) < lo or (hi is not None and len(x) > hi):
            return False
        for k in required:
            if k not in x:
                return False
        for k, c in prop_items:
            if k in x and not c(x[k]):
                return False
        if extra_check is not None:
            for k, v in x.items():
                if k not in props and not extra_check(v):
                    return False
        return True

    return check


def _array_check(s: dict[str, Any]) -> Check:
    items = compile_subschema(s["items"]) if "items" in s else None
    lo, hi = s.get("minItems", 0), s.get("maxItems")

    def check(x: Any) -> bool:
        if not isinstance(x, list):
            return True
        if len(x) < lo or (hi is not None and len(x) > hi):
            return False
        if items is not None:
            for v in x:
                if not items(v):
                    return False
        return True

    return check


_STRING_KW = ("minLength", "maxLength", "pattern")
_NUMBER_KW = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_OBJECT_KW = ("properties", "required", "additionalProperties", "minProperties", "maxProperties")
_ARRAY_KW = ("items", "minItems", "maxItems")
_SUPPORTED = frozenset(
    {
        "type",
        "enum",
        "const",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        *_STRING_KW,
        *_NUMBER_KW,
        *_OBJECT_KW,
        *_ARRAY_KW,
    }
)


def compile_subschema(s: Any) -> Check:
    """A predicate equal to jsonschema's Draft 2020-12 validity for `s`; raises _Unsupported otherwise."""
    if s is True or s is False:
        return (lambda _x: True) if s else (lambda _x: False)
    if not isinstance(s, dict):
        raise _Unsupported("schema is not an object")
    unknown = s.keys() - _SUPPORTED - _ANNOTATIONS
    if unknown:
        raise _Unsupported(f"keywords {sorted(unknown)}")
    checks: list[Check] = []
    if "type" in s:
        checks.append(_type_check(s["type"]))
    if "enum" in s:
        checks.append(_enum_check(s["enum"]))
    if "const" in s:
        checks.append(_enum_check([s["const"]]))
    if any(k in s for k in _STRING_KW):
        checks.append(_string_check(s))
    if any(k in s for k in _NUMBER_KW):
        checks.append(_number_check(s))
    if any(k in s for k in _OBJECT_KW):
        checks.append(_object_check(s))
    if any(k in s for k in _ARRAY_KW):
        checks.append(_array_check(s))
    if "allOf" in s:
        checks.extend(compile_subschema(sub) for sub in s["allOf"])
    if "anyOf" in s:
        subs = [compile_subschema(sub) for sub in s["anyOf"]]
        checks.append(lambda x: any(c(x) for c in subs))
    if "oneOf" in s:
        one = [compile_subschema(sub) for sub in s["oneOf"]]
        checks.append(lambda x: sum(1 for c in one if c(x)) == 1)
    if "not" in s:
        negated = compile_subschema(s["not"])
        checks.append(lambda x: not negated(x))
    return _all_of(checks)


def compile_schema(schema: dict[str, Any] | None) -> Check | None:
    """A fast validity predicate for `schema`, or None when it uses keywords outside the compiled subset."""
    if schema is None:
        return None
    try:
        return compile_subschema(schema)
    except (_Unsupported, re.error):
        return None
