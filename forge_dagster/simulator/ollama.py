"""Ollama API: chat, generate (empty prompt loads, keep_alive 0 unloads), tags, ps, show, pull, embed.

Works with `ollama.Client(host=sim.ollama_host)`. Answers honour `format` ("json" or a JSON schema).
Of the content fault knobs only `malformed_rate` applies here (a local model that answers with broken
JSON); the provider knobs (rate limits, quota, 5xx) do not. Latency does.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from forge_dagster.simulator.app import BadRequest, Request, Response, error_response, json_response, route
from forge_dagster.simulator.config import SimConfig
from forge_dagster.simulator.dice import digest, fingerprint, rng
from forge_dagster.simulator.generation import Generation, OutputSpec, content_text, generate
from forge_dagster.simulator.schemas import schema_in_text

if TYPE_CHECKING:
    from forge_dagster.simulator.state import SimState

DEFAULT_KEEP_ALIVE_S = 300.0
EMBED_DIM = 768
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: Any) -> float | None:
    """Seconds a model stays loaded; None = forever (negative), 0 = unload now."""
    if value is None or value == "":
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts:
                raise BadRequest(f"invalid keep_alive duration {value!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    return None if seconds < 0 else seconds


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class OllamaStore:
    """Which models exist and which are loaded (with their expiry)."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.loaded: dict[str, float | None] = {}

    def clear(self) -> None:
        self.loaded.clear()

    def resolve(self, name: str) -> str | None:
        catalog = self.state.config.ollama_models
        for candidate in (name, f"{name}:latest"):
            if candidate in catalog:
                return candidate
        return None

    def touch(self, model: str, keep_alive: Any) -> bool:
        """Load (or keep) `model` for keep_alive; False when keep_alive 0 unloaded it."""
        seconds = keep_alive_seconds(keep_alive)
        with self.state.lock:
            if seconds == 0:
                self.loaded.pop(model, None)
                return False
            self.loaded[model] = None if seconds is None else self.state.now() + seconds
            return True

    def running(self) -> dict[str, float | None]:
        now = self.state.now()
        with self.state.lock:
            for model, expires in list(self.loaded.items()):
                if expires is not None and expires <= now:
                    del self.loaded[model]
            return dict(self.loaded)


def _details(model: str) -> dict[str, Any]:
    family = re.split(r"[\d:.-]", model, maxsplit=1)[0] or "llama"
    size = re.search(r"(\d+(?:\.\d+)?)b", model)
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": f"{size.group(1).upper()}B" if size else "137M", "quantization_level": "Q4_K_M"}


def _model_entry(model: str) -> dict[str, Any]:
    size = 1_000_000_000 + int(digest("size", model)[:5], 16) * 1000
    return {"name": model, "model": model, "modified_at": "2025-01-01T00:00:00Z", "size": size,
            "digest": digest("digest", model), "details": _details(model)}


def _spec(fmt: Any, texts: list[str]) -> OutputSpec:
    if isinstance(fmt, dict):
        return OutputSpec("schema", fmt)
    if fmt == "json":
        return OutputSpec("json")
    for text in texts:
        schema = schema_in_text(text)
        if schema is not None:
            return OutputSpec("schema", schema)
    return OutputSpec("text")


def _model_or_error(state: SimState, body: dict[str, Any]) -> str | Response:
    name = str(body.get("model") or "")
    model = state.ollama.resolve(name)
    if model is None:
        return error_response("ollama", 404, f'model "{name}" not found, try pulling it first')
    return model


def _stats(gen: Generation | None) -> dict[str, Any]:
    prompt, out = (gen.input_tokens, gen.output_tokens) if gen else (0, 0)
    return {"total_duration": 1_000_000 * (1 + out), "load_duration": 1_000_000, "prompt_eval_count": prompt,
            "prompt_eval_duration": 100_000 * prompt, "eval_count": out, "eval_duration": 1_000_000 * out}


def _answer(state: SimState, req: Request, field: str, make: Any) -> Response:
    """Shared body of chat and generate: load/unload, generate, stream or not."""
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = _model_or_error(state, body)
    if isinstance(model, Response):
        return model
    texts, empty = make(body)
    stays = state.ollama.touch(model, body.get("keep_alive"))
    now = _iso(state.now())
    base = {"model": model, "created_at": now}
    if empty:
        reason = "load" if stays else "unload"
        return json_response({**base, **field_value(field, ""), "done": True, "done_reason": reason})
    fp = fingerprint({"model": model, "texts": texts, "format": body.get("format")})
    opts = body.get("options") or {}
    limit = opts.get("num_predict") if isinstance(opts.get("num_predict"), int) and opts["num_predict"] > 0 else None
    faults = SimConfig(malformed_rate=state.config.malformed_rate)
    gen = generate(state.dice, faults, fp, 0, _spec(body.get("format"), texts), "\n".join(texts), limit, model)
    text = gen.text or ""
    final = {**base, **field_value(field, text), "done": True,
             "done_reason": "length" if gen.stop == "length" else "stop", **_stats(gen)}
    if body.get("stream", True) is False:
        return json_response(final)
    step = max(1, math.ceil(len(text) / 3))
    chunks = [{**base, **field_value(field, text[i:i + step]), "done": False} for i in range(0, len(text), step)]
    final.update(field_value(field, ""))
    lines = "".join(json.dumps(c) + "\n" for c in [*chunks, final]).encode()
    return Response(200, lines, "application/x-ndjson")


def field_value(field: str, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if field == "message" else {"response": text}


def chat(state: SimState, req: Request) -> Response:
    def texts(body: dict[str, Any]) -> tuple[list[str], bool]:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        return [content_text(m.get("content")) for m in messages], not messages

    return _answer(state, req, "message", texts)


def generate_route(state: SimState, req: Request) -> Response:
    def texts(body: dict[str, Any]) -> tuple[list[str], bool]:
        prompt = str(body.get("prompt") or "")
        return [str(body.get("system") or ""), prompt], not prompt

    return _answer(state, req, "response", texts)


def tags(state: SimState, req: Request) -> Response:
    return json_response({"models": [_model_entry(m) for m in state.config.ollama_models]})


def ps(state: SimState, req: Request) -> Response:
    far = state.now() + 10 * 365 * 24 * 3600
    models = [{**_model_entry(m), "expires_at": _iso(far if exp is None else exp), "size_vram": _model_entry(m)["size"],
               "context_length": 4096} for m, exp in sorted(state.ollama.running().items())]
    return json_response({"models": models})


def show(state: SimState, req: Request) -> Response:
    model = _model_or_error(state, req.json() or {})
    if isinstance(model, Response):
        return model
    details = _details(model)
    return json_response({"modelfile": f"# Forge simulator (test double)\nFROM {model}\n", "parameters": "",
                          "template": "{{ .Prompt }}", "details": details, "modified_at": "2025-01-01T00:00:00Z",
                          "model_info": {"general.architecture": details["family"]},
                          "capabilities": ["embedding"] if "embed" in model else ["completion"]})


def pull(state: SimState, req: Request) -> Response:
    model = _model_or_error(state, req.json() or {})
    if isinstance(model, Response):
        return model
    return json_response({"status": "success"})


def embed(state: SimState, req: Request) -> Response:
    body = req.json() or {}
    model = _model_or_error(state, body)
    if isinstance(model, Response):
        return model
    state.ollama.touch(model, body.get("keep_alive"))
    raw = body.get("input", body.get("prompt", ""))
    inputs = [raw] if isinstance(raw, str) else list(raw)
    vectors = []
    for text in inputs:
        r = rng(state.seed, "embed", model, text)
        vec = [r.gauss(0.0, 1.0) for _ in range(EMBED_DIM)]
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        vectors.append([round(v / norm, 6) for v in vec])
    if req.path == "/api/embeddings":
        return json_response({"embedding": vectors[0] if vectors else []})
    return json_response({"model": model, "embeddings": vectors})


def version(state: SimState, req: Request) -> Response:
    return json_response({"version": "0.0.0-forge-simulator"})


ROUTES = [
    route("POST", "/api/chat", "ollama", chat),
    route("POST", "/api/generate", "ollama", generate_route),
    route("GET", "/api/tags", "ollama", tags),
    route("GET", "/api/ps", "ollama", ps),
    route("POST", "/api/show", "ollama", show),
    route("POST", "/api/pull", "ollama", pull),
    route("POST", "/api/embed", "ollama", embed),
    route("POST", "/api/embeddings", "ollama", embed),
    route("GET", "/api/version", "ollama", version),
]
