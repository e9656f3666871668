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
    provider over a 60 s sliding window, counting inference calls and batch creates (None or 0 = unlimited).
    cache_min_tokens: prompt caching (OpenAI automatic prefixes, Anthropic `cache_control` breakpoints) keeps
    only prefixes at least this long. anthropic_results_retention_s: an Anthropic batch is forgotten (404)
    this long after its creation. clock_offset_s: moves the simulator's clock forward, so expiries (file
    `expires_at`, result retention, cache TTLs) can be reached without waiting. quota_tokens: tokens an API key may consume (realtime usage; batch input at create, output when it ends)
    before OpenAI answers insufficient_quota and Anthropic a credit-balance error (None = unlimited).
    enqueued_token_limit: input tokens an API key may have enqueued per model in unfinished OpenAI batches;
    a batch that would go over it is created, then fails validation with `token_limit_exceeded`, as OpenAI's
    do (None = unlimited).
    ambiguous_create: rate at which a batch create takes effect but is answered 503 (or the connection is
    dropped, ambiguous_create_mode="drop"). line_4xx_file: where OpenAI 4xx lines go ("output" or "error").
    """

    latency_ms: int = 0
    route_latency_ms: dict[str, int] = field(default_factory=dict)
    batch_processing_s: float = 0.0
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    quota_tokens: int | None = None
    enqueued_token_limit: int | None = None
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
    cache_min_tokens: int = 1024
    clock_offset_s: float = 0.0
    anthropic_results_retention_s: float = 29 * 86400.0

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
_HELP = {
    "latency_ms": "delay added to every response, in ms",
    "route_latency_ms": 'extra delay per route, JSON, e.g. {"POST /v1/batches": 3000} (fnmatch patterns)',
    "batch_processing_s": "seconds from creation until a batch ends (checked when it is read)",
    "rpm_limit": "requests per minute per API key and provider (429 with retry-after)",
    "tpm_limit": "tokens per minute per API key and provider (429 with retry-after)",
    "quota_tokens": "tokens per API key before insufficient_quota / credit-balance errors",
    "enqueued_token_limit": "input tokens per API key and model in unfinished OpenAI batches; over it a "
                            "batch fails with token_limit_exceeded",
    "error_5xx_rate": "share of API requests answered 500/502/503 (Anthropic also 529)",
    "malformed_rate": "share of answers that are not valid JSON",
    "schema_violation_rate": "share of structured answers that are valid JSON violating the schema",
    "truncation_rate": "share of answers cut short (finish_reason length / stop_reason max_tokens)",
    "refusal_rate": "share of answers that are refusals",
    "line_4xx_rate": "share of batch lines answered 400 (OpenAI error null + status 400; Anthropic errored)",
    "line_4xx_file": "OpenAI file the 400 lines go to: output or error",
    "expire_batches": "batches end expired with --expire-complete-fraction of requests finished",
    "expire_complete_fraction": "share of requests finished in an expired batch",
    "cancel_complete_fraction": "share of requests that still finish when a batch is cancelled",
    "out_of_order": "shuffle result lines (deterministically)",
    "ambiguous_create": "share of batch creates that take effect but answer 503 / drop the connection",
    "ambiguous_create_mode": "503 or drop",
    "ollama_models": "comma-separated Ollama models the simulator knows",
    "clock_offset_s": "seconds added to the simulator's clock (expiry and retention without waiting)",
    "cache_min_tokens": "shortest prompt prefix (estimated tokens) either provider's prompt cache keeps",
    "anthropic_results_retention_s": "seconds after creation an Anthropic batch and its results are kept "
                                     "(the API's 29 days)",
}


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELD_TYPES:
        raise ValueError(f"unknown simulator knob {name!r}; known: {sorted(_FIELD_TYPES)}")
    kind = _FIELD_TYPES[name]
    try:
        if kind == "int":
            return int(value or 0)
        if kind == "int | None":
            number = None if value in (None, "") else int(value)
            # A zero rate limit means "no limit"; a zero quota means "exhausted from the start".
            return None if number == 0 and name != "quota_tokens" else number
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
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
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
        text = _HELP.get(f.name, f.name)
        if f.type == "bool":
            parser.add_argument(flag, action="store_const", const=True, default=None, help=text)
        elif f.type in ("dict[str, int]", "list[str]"):
            parser.add_argument(flag, default=None, help=text)
        else:
            parser.add_argument(flag, default=None, help=f"{text} (default {f.default!r})")


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    """Build a SimConfig from the flags add_cli_arguments added; flags left unset keep their defaults.
    Raises ValueError for a bad value (callers turn it into parser.error)."""
    knobs: dict[str, Any] = {}
    for f in dataclasses.fields(SimConfig):
        value = getattr(ns, f.name, None)
        if value is None:
            continue
        if f.type == "dict[str, int]" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"{_flag(f.name)} must be a JSON object: {exc}") from exc
        knobs[f.name] = value
    return SimConfig().merged(**knobs)
