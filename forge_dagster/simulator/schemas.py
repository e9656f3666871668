"""JSON Schema answers: a deterministic instance that satisfies a schema, one that violates it, and the
schema a prompt carries in a fenced ```json block.

Supports type (incl. lists), enum, const, object properties/required/additionalProperties, array items /
prefixItems / minItems / maxItems / uniqueItems, string minLength / maxLength / format, number and integer
bounds / multipleOf, boolean, null, anyOf / oneOf / allOf and local $ref ($defs, definitions). Every
answer is checked with jsonschema; `pattern` is best effort.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
from typing import Any

import jsonschema

from forge_dagster.simulator.dice import rng

WORDS = (
    "amber basalt cedar delta ember fjord granite harbor indigo juniper kestrel lagoon meadow nectar "
    "orchid prairie quartz river sierra tundra umber valley willow xenon yarrow zephyr"
).split()
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
_FORMATS = {
    "date-time": "2024-05-17T09:30:00Z",
    "date": "2024-05-17",
    "time": "09:30:00Z",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
    "ipv4": "192.0.2.1",
    "hostname": "sim.example.com",
}


def schema_in_text(text: str) -> dict[str, Any] | None:
    """The first fenced ```json block in `text` that parses to an object with "type" or "properties"."""
    for block in _FENCE.findall(text or ""):
        try:
            value = json.loads(block)
        except ValueError:
            continue
        if isinstance(value, dict) and ("type" in value or "properties" in value):
            return value
    return None


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def is_valid(schema: Any, instance: Any) -> bool:
    """Whether `instance` satisfies `schema` (True when the schema itself cannot be used)."""
    try:
        return _validator(json.dumps(schema, sort_keys=True)).is_valid(instance)
    except Exception:  # noqa: BLE001 - an unusable schema (bad $ref, bad keyword) cannot be checked
        return True


def satisfying(schema: dict[str, Any], *key: Any) -> Any:
    """A value that satisfies `schema`, fixed by `key` (tries a few variants, then gives the last)."""
    value: Any = None
    for attempt in range(8):
        value = _Gen(schema, rng("schema", *key, attempt)).make(schema, 0)
        if is_valid(schema, value):
            return value
    return value


def violating(schema: dict[str, Any], instance: Any) -> Any:
    """Valid JSON that fails `schema` (a required key dropped, a wrong type, ...); `instance` if impossible."""
    candidates: list[Any] = []
    root = _Gen(schema, random.Random(0)).resolve(schema)
    if isinstance(instance, dict):
        for name in root.get("required", []):
            candidates.append({k: v for k, v in instance.items() if k != name})
        for name, value in instance.items():
            wrong = 12345 if isinstance(value, str) else "not-a-" + type(value).__name__
            candidates.append({**instance, name: wrong})
        candidates.append({**instance, "unexpected_field_sim": True})
    candidates += [["schema", "violation"], {"schema_violation": True}, "schema violation", None, 0]
    for candidate in candidates:
        if not is_valid(schema, candidate):
            return candidate
    return instance


class _Gen:
    def __init__(self, root: dict[str, Any], r: random.Random) -> None:
        self.root = root
        self.r = r

    def resolve(self, schema: Any) -> Any:
        for _ in range(32):
            if not (isinstance(schema, dict) and isinstance(schema.get("$ref"), str)):
                return schema
            ref = schema["$ref"]
            target: Any = self.root
            if ref.startswith("#"):
                for part in [p for p in ref[1:].split("/") if p]:
                    target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            else:
                target = {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def make(self, schema: Any, depth: int) -> Any:
        schema = self.resolve(schema)
        if schema is True or not isinstance(schema, dict):
            return self.words(2)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.r.choice(schema["enum"])
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part)
                if isinstance(part, dict):
                    props = {**merged.get("properties", {}), **part.get("properties", {})}
                    required = list(dict.fromkeys(merged.get("required", []) + part.get("required", [])))
                    merged = {**part, **merged, "properties": props, "required": required}
            return self.make(merged, depth)
        for key in ("oneOf", "anyOf"):
            if schema.get(key):
                options = list(schema[key])
                self.r.shuffle(options)
                options.sort(key=lambda o: self.resolve(o).get("type") == "null" if isinstance(o, dict) else 0)
                base = {k: v for k, v in schema.items() if k != key}
                for option in options:
                    value = self.make({**base, **self.resolve(option)} if isinstance(option, dict) else option,
                                      depth + 1)
                    if is_valid({**schema, "$defs": self.root.get("$defs", {}),
                                 "definitions": self.root.get("definitions", {})}, value):
                        return value
                return self.make(options[0], depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            non_null = [k for k in kind if k != "null"]
            kind = non_null[0] if non_null else "null"
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        return getattr(self, "_" + kind, self._string)(schema, depth)

    def words(self, n: int) -> str:
        return " ".join(self.r.choice(WORDS) for _ in range(max(1, n)))

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if name in required or (depth < 4 and self.r.random() < 0.8):
                out[name] = self.make(sub, depth + 1)
        for name in required - set(out):
            out[name] = self.words(1)
        extra = schema.get("additionalProperties")
        if not props and isinstance(extra, dict):
            out[self.r.choice(WORDS)] = self.make(extra, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", low + 3))
        count = self.r.randint(low, max(low, min(high, low + 3))) if depth < 5 else low
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {}) if isinstance(schema.get("items", {}), dict | bool) else {}
        out: list[Any] = []
        for i in range(min(max(count, len(prefix)), high)):
            sub = prefix[i] if i < len(prefix) else items
            value = self.make(sub, depth + 1)
            if schema.get("uniqueItems"):
                for _ in range(10):
                    if value not in out:
                        break
                    value = self.make(sub, depth + 1)
                if value in out:
                    break
            out.append(value)
        return out

    def _string(self, schema: dict[str, Any], depth: int) -> str:
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        low = int(schema.get("minLength", 0))
        high = int(schema.get("maxLength", max(low, 40)))
        text = self.words(self.r.randint(1, 5))
        while len(text) < low:
            text += " " + self.words(1)
        text = text[:high].rstrip() or text[:high]
        return text + "x" * (low - len(text))

    def _number(self, schema: dict[str, Any], depth: int, integer: bool = False) -> float | int:
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1000 if "maximum" in schema else 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 100))
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            low = schema["exclusiveMinimum"] + (1 if integer else 1e-6)
        if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
            high = schema["exclusiveMaximum"] - (1 if integer else 1e-6)
        step = schema.get("multipleOf")
        if integer:
            low, high = math.ceil(low), math.floor(high)
            value: float | int = self.r.randint(low, max(low, high))
        else:
            value = round(low + (high - low) * self.r.random(), 3)
            value = min(max(value, low), high)
        if step:
            value = math.ceil(low / step) * step
            value = int(value) if integer or float(value).is_integer() else value
        return value

    def _integer(self, schema: dict[str, Any], depth: int) -> int:
        return int(self._number(schema, depth, integer=True))

    def _boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.r.random() < 0.5

    def _null(self, schema: dict[str, Any], depth: int) -> None:
        return None
