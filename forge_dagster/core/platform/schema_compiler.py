"""Compiling a processor's JSON Schema into plain Python predicates, for fail-closed validation's hot path.

`compile_schema` turns the common keyword subset of Draft 2020-12 (type, enum, const, the string, number,
object and array bounds, allOf / anyOf / oneOf / not) into one predicate that agrees with jsonschema on
validity. A schema using anything else compiles to None and jsonschema checks it; jsonschema also writes
every error message, since the predicate only says yes or no.
"""

from __future__ import annotations

import numbers
import operator
import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


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


def _single_type(spec: Any) -> str | None:
    """The one type a `type` keyword allows, if it allows exactly one."""
    if isinstance(spec, list) and len(spec) == 1:
        spec = spec[0]
    return spec if isinstance(spec, str) else None


def _type_check(spec: str | list[str]) -> Check:
    names = [spec] if isinstance(spec, str) else list(spec)
    tests = [_TYPE_TESTS[n] for n in names]
    return tests[0] if len(tests) == 1 else (lambda x: any(t(x) for t in tests))


# The keyword checks below pass values of other types, as JSON Schema says, unless `typed`: then the
# schema's `type` is theirs alone and they fail other values too, which saves a separate type test.


def _string_check(s: dict[str, Any], typed: bool) -> Check:
    lo, hi = s.get("minLength", 0), s.get("maxLength")
    pattern = re.compile(s["pattern"]) if "pattern" in s else None

    def check(x: Any) -> bool:
        if not isinstance(x, str):
            return not typed
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


def _object_check(s: dict[str, Any], typed: bool) -> Check:
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
            return not typed
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


def _array_check(s: dict[str, Any], typed: bool) -> Check:
    items = compile_subschema(s["items"]) if "items" in s else None
    lo, hi = s.get("minItems", 0), s.get("maxItems")

    def check(x: Any) -> bool:
        if not isinstance(x, list):
            return not typed
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
    kind = _single_type(s.get("type"))
    typed = False  # whether a check below already fails values that are not of the schema's one type
    for members in ([s["enum"]] if "enum" in s else []) + ([[s["const"]]] if "const" in s else []):
        checks.append(_enum_check(members))
        typed = typed or (kind == "string" and all(isinstance(m, str) for m in members))
    if any(k in s for k in _STRING_KW):
        checks.append(_string_check(s, kind == "string"))
        typed = typed or kind == "string"
    if any(k in s for k in _NUMBER_KW):
        checks.append(_number_check(s))
    if any(k in s for k in _OBJECT_KW):
        checks.append(_object_check(s, kind == "object"))
        typed = typed or kind == "object"
    if any(k in s for k in _ARRAY_KW):
        checks.append(_array_check(s, kind == "array"))
        typed = typed or kind == "array"
    if "type" in s and not typed:
        checks.insert(0, _type_check(s["type"]))
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
