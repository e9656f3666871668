"""The simulator's fault knobs (`SimConfig`) and the CLI flags that mirror them.

Every knob defaults to "no fault". Rates are probabilities in [0, 1] decided per request from a hash of the
seed and the request, so a run is reproducible for a seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_OLLAMA_MODELS = ["llama3.2:3b", "qwen2.5:7b-instruct", "nomic-embed-text:latest"]

_RATES = (
    "error_5xx_rate",
    "malformed_rate",
    "schema_violation_rate",
    "truncation_rate",
    "refusal_rate",
    "line_4xx_rate",
    "expire_complete_fraction",
    "cancel_complete_fraction",
    "ambiguous_create",
)


@dataclass
class SimConfig:
    """Fault and timing knobs. All optional; the defaults inject no fault.

    latency_ms: added to every provider/Ollama/Slack response. route_latency_ms: extra per route, keyed
    "METHOD /path" (fnmatch patterns allowed, e.g. "GET /v1/batches/*"). batch_processing_s: a batch ends
    at the first read once this long has passed since creation. rpm_limit / tpm_limit: per API key and
    provider over a 60 s sliding window (None = unlimited). quota_tokens: tokens an API key may consume
    before OpenAI answers insufficient_quota and Anthropic a credit-balance error (None = unlimited).
    ambiguous_create: rate at which a batch create takes effect but is answered 503 (or the connection is
    dropped, ambiguous_create_mode="drop"). line_4xx_file: where OpenAI 4xx lines go ("output" or "error").
    """

    latency_ms: int = 0
    route_latency_ms: dict[str, int] = field(default_factory=dict)
    batch_processing_s: float = 0.0
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    quota_tokens: int | None = None
    error_5xx_rate: float = 0.0
    malformed_rate: float = 0.0
    schema_violation_rate: float = 0.0
    truncation_rate: float = 0.0
    refusal_rate: float = 0.0
    line_4xx_rate: float = 0.0
    line_4xx_file: str = "output"
    expire_batches: bool = False
    expire_complete_fraction: float = 0.5
    cancel_complete_fraction: float = 0.0
    out_of_order: bool = False
    ambiguous_create: float = 0.0
    ambiguous_create_mode: str = "503"
    ollama_models: list[str] = field(default_factory=lambda: list(DEFAULT_OLLAMA_MODELS))

    def to_dict(self) -> dict[str, Any]:
        """The knobs as plain JSON-able data."""
        return dataclasses.asdict(self)

    def merged(self, **knobs: Any) -> SimConfig:
        """A copy with `knobs` applied; unknown names or bad values raise ValueError."""
        data = self.to_dict()
        for name, value in knobs.items():
            data[name] = _coerce(name, value)
        return SimConfig(**data)


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(SimConfig)}


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELD_TYPES:
        raise ValueError(f"unknown simulator knob {name!r}; known: {sorted(_FIELD_TYPES)}")
    kind = _FIELD_TYPES[name]
    try:
        if kind == "int":
            return int(value or 0)
        if kind == "int | None":
            return None if value in (None, "", 0) else int(value)
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind == "float":
            number = float(value)
            if name in _RATES and not 0.0 <= number <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {number}")
            if number < 0:
                raise ValueError(f"{name} must not be negative")
            return number
        if kind == "dict[str, int]":
            return {str(k): int(v) for k, v in dict(value or {}).items()}
        if kind == "list[str]":
            return [str(v) for v in (value.split(",") if isinstance(value, str) else value)]
        if name == "line_4xx_file" and value not in ("output", "error"):
            raise ValueError("line_4xx_file must be 'output' or 'error'")
        if name == "ambiguous_create_mode" and str(value) not in ("503", "drop"):
            raise ValueError("ambiguous_create_mode must be '503' or 'drop'")
        return str(value)
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"bad value for {name}: {value!r}") from exc


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_cli_arguments(parser: argparse.ArgumentParser, *, include_server: bool = False) -> None:
    """Add one flag per SimConfig knob (e.g. --latency-ms, --expire-batches); with include_server also
    --host, --port and --seed. Unset flags stay None so config_from_args keeps the defaults."""
    if include_server:
        parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8700, help="port (0 picks a free one)")
        parser.add_argument("--seed", type=int, default=0, help="seed for every simulated choice")
    for f in dataclasses.fields(SimConfig):
        flag = _flag(f.name)
        if f.type == "bool":
            parser.add_argument(flag, action="store_const", const=True, default=None, help=f"knob {f.name}")
        elif f.type == "dict[str, int]":
            parser.add_argument(flag, default=None, help='JSON object, e.g. {"POST /v1/batches": 3000}')
        elif f.type == "list[str]":
            parser.add_argument(flag, default=None, help="comma-separated list")
        else:
            parser.add_argument(flag, default=None, help=f"knob {f.name} (default {f.default!r})")


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    """Build a SimConfig from the flags add_cli_arguments added; flags left unset keep their defaults."""
    knobs: dict[str, Any] = {}
    for f in dataclasses.fields(SimConfig):
        value = getattr(ns, f.name, None)
        if value is None:
            continue
        if f.type == "dict[str, int]" and isinstance(value, str):
            value = json.loads(value)
        knobs[f.name] = value
    return SimConfig().merged(**knobs)
