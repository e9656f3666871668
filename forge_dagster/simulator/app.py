"""Request routing and the fault pipeline every provider request goes through.

Order for OpenAI/Anthropic routes: latency, auth (401), quota, rate limit (429), injected 5xx, handler.
The request log keeps `key_id` (12 hex of the key's sha256), never the key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from forge_dagster.simulator import anthropic_format, openai_format
from forge_dagster.simulator.dice import key_id
from forge_dagster.simulator.state import SimState

BANNER = "Forge provider SIMULATOR (test double, not a provider)"
API_PROVIDERS = ("openai", "anthropic")
_5XX = {"openai": [500, 502, 503], "anthropic": [500, 502, 503, 529]}


class BadRequest(Exception):
    """Raised by handlers for a 400 in the provider's own error format."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    base_url: str
    provider: str = ""
    key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON (BadRequest if it is not)."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadRequest(f"The request body is not valid JSON: {exc}") from exc


    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        """An integer query parameter clamped to [low, high] (BadRequest if it is not an integer)."""
        raw = self.query.get(name)
        try:
            value = default if raw in (None, "") else int(raw)
        except ValueError as exc:
            raise BadRequest(f"Invalid '{name}': {raw!r} is not an integer.") from exc
        return max(low, min(high, value))


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj, ensure_ascii=False).encode(), "application/json", dict(headers or {}))


def error_response(provider: str, status: int, message: str, **kw: Any) -> Response:
    """An error in the provider's own envelope."""
    if provider == "anthropic":
        return json_response(anthropic_format.error_body(status, message, type_=kw.get("type_")), status)
    if provider == "openai":
        return json_response(openai_format.error_body(status, message, **kw), status)
    if provider == "ollama":
        return json_response({"error": message}, status)
    return Response(status, message.encode(), "text/plain; charset=utf-8")


def ambiguous_create(state: SimState, req: Request, fp: str, ok: Response) -> Response:
    """The create took effect; with ambiguous_create the caller is not told so."""
    occurrence = state.occurrence("ambiguous", fp, state.config.ambiguous_create > 0)
    if not state.dice.hit("ambiguous", state.config.ambiguous_create, fp, occurrence):
        return ok
    req.extra["fault"] = "ambiguous_create"
    if state.config.ambiguous_create_mode == "drop":
        return Response(drop=True)
    return error_response(req.provider, 503, "Service unavailable (the batch was created anyway: Forge "
                          "simulator ambiguous_create).", type_="server_error" if req.provider == "openai" else None)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    provider: str  # openai | anthropic | dual (/v1/models) | ollama | slack | control
    handler: Callable[..., Response]
    kind: str = "api"  # inference | batch_create | api
    tokens: Callable[[Request], int] | None = None


def route(method: str, path: str, provider: str, handler: Callable[..., Response], kind: str = "api",
          tokens: Callable[[Request], int] | None = None) -> Route:
    """A route; `{name}` in the path captures one segment passed to the handler as a keyword."""
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"
    return Route(method, re.compile(regex), provider, handler, kind, tokens)


def _api_key(req: Request) -> str | None:
    auth = req.headers.get("authorization") or ""
    bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if req.provider == "anthropic":
        return (req.headers.get("x-api-key") or "").strip() or bearer or None
    return bearer or None


def _body_fingerprint(req: Request) -> str:
    body = req.body
    boundary = req.headers.get_param("boundary") if req.headers.get_content_maintype() == "multipart" else None
    if isinstance(boundary, str):
        body = body.replace(boundary.encode(), b"")  # the boundary is random per upload
    return hashlib.sha256(body).hexdigest()[:24]


class App:
    """Dispatches a parsed request through the fault pipeline to its handler, and logs it."""

    def __init__(self, state: SimState, routes: list[Route]) -> None:
        self.state = state
        self.routes = routes

    def handle(self, req: Request) -> Response:
        started = time.time()
        found = self._match(req)
        if found is None:
            req.provider = "anthropic" if "anthropic-version" in req.headers else (
                "ollama" if req.path.startswith("/api/") else "openai" if req.path.startswith("/v1/") else "")
            resp = error_response(req.provider, 404, f"Unknown route {req.method} {req.path} (Forge simulator)")
        else:
            rt, params = found
            req.provider = rt.provider
            if rt.provider == "dual":
                is_anthropic = "anthropic-version" in req.headers or "x-api-key" in req.headers
                req.provider = "anthropic" if is_anthropic else "openai"
            try:
                resp = self._pipeline(rt, params, req)
            except BadRequest as exc:
                resp = error_response(req.provider, 400, str(exc))
            except Exception as exc:  # noqa: BLE001 - a simulator bug must answer, not kill the connection
                traceback.print_exc()
                resp = error_response(req.provider, 500, f"simulator internal error: {exc!r}")
        if req.provider != "control":
            entry = {"ts": started, "method": req.method, "path": req.path, "status": 0 if resp.drop else resp.status,
                     "provider": req.provider or "unknown", "key_id": req.key, **req.extra}
            self.state.log(entry)
        return resp

    def _match(self, req: Request) -> tuple[Route, dict[str, str]] | None:
        for rt in self.routes:
            if rt.method == req.method:
                m = rt.pattern.match(req.path)
                if m:
                    return rt, m.groupdict()
        return None

    def _pipeline(self, rt: Route, params: dict[str, str], req: Request) -> Response:
        state, cfg = self.state, self.state.config
        if req.provider == "control":
            return rt.handler(state, req, **params)
        delay_ms = cfg.latency_ms + next((ms for pat, ms in cfg.route_latency_ms.items()
                                          if fnmatch.fnmatchcase(f"{req.method} {req.path}", pat)), 0)
        if delay_ms > 0:
            time.sleep(delay_ms / 1000)
        if req.provider not in API_PROVIDERS:
            return rt.handler(state, req, **params)
        api_key = _api_key(req)
        if not api_key:
            message = ("x-api-key header is required" if req.provider == "anthropic" else
                       "You didn't provide an API key. You need to provide your API key in an Authorization "
                       "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            return error_response(req.provider, 401, message, type_="authentication_error"
                                  if req.provider == "anthropic" else "invalid_request_error")
        req.key = key_id(api_key)
        resp = self._admitted(rt, params, req)
        resp.headers["x-request-id" if req.provider == "openai" else "request-id"] = state.dice.new_id(
            "req_", "request")
        return resp

    def _admitted(self, rt: Route, params: dict[str, str], req: Request) -> Response:
        """Quota, rate limit and injected 5xx for an authenticated API request, then the handler."""
        state, cfg = self.state, self.state.config
        limit_headers: dict[str, str] = {}
        if rt.kind in ("inference", "batch_create"):
            blocked = self._limits(rt, req, limit_headers)
            if blocked is not None:
                return blocked
        fp = f"{req.method} {req.path} {_body_fingerprint(req)}"
        occurrence = state.occurrence("5xx", fp, cfg.error_5xx_rate > 0)
        if state.dice.hit("5xx", cfg.error_5xx_rate, fp, occurrence):
            status = state.dice.choice(_5XX[req.provider], "5xx-status", fp, occurrence)
            req.extra["fault"] = f"{status}"
            body = (anthropic_format.server_error_body(status) if req.provider == "anthropic"
                    else openai_format.server_error_body(status))
            return json_response(body, status)
        resp = rt.handler(state, req, **params)
        resp.headers.update(limit_headers)
        return resp

    def _limits(self, rt: Route, req: Request, out_headers: dict[str, str]) -> Response | None:
        """A 429 / quota answer if the request may not proceed; else None (headers put in out_headers)."""
        state, cfg = self.state, self.state.config
        assert req.key is not None
        if state.quota.exhausted(req.provider, req.key, cfg.quota_tokens):
            req.extra["fault"] = "quota_exhausted"
            if req.provider == "anthropic":
                return error_response("anthropic", 400, anthropic_format.CREDIT_BALANCE)
            return error_response("openai", 429, openai_format.INSUFFICIENT_QUOTA, type_="insufficient_quota",
                                  code="insufficient_quota")
        tokens = rt.tokens(req) if rt.tokens else 0
        if cfg.rpm_limit or cfg.tpm_limit:
            decision = state.limiter.check(req.provider, req.key, tokens, cfg.rpm_limit, cfg.tpm_limit, state.now())
            out_headers.update(decision.headers)
            if not decision.allowed:
                req.extra["fault"] = "rate_limited"
                limit = cfg.rpm_limit if decision.limited_by == "requests" else cfg.tpm_limit
                unit = "RPM" if decision.limited_by == "requests" else "TPM"
                wait = decision.retry_after_s
                if req.provider == "anthropic":
                    message = (f"This request would exceed the rate limit for your organization of {limit} "
                               f"{decision.limited_by} per minute. Retry after {wait:.1f}s (Forge simulator).")
                    resp = error_response("anthropic", 429, message)
                else:
                    message = (f"Rate limit reached for {decision.limited_by} per min ({unit}): Limit {limit}, "
                               f"Used {decision.used}, Requested {tokens if unit == 'TPM' else 1}. Please try "
                               f"again in {wait:.3f}s.")
                    resp = error_response("openai", 429, message, type_=decision.limited_by,
                                          code="rate_limit_exceeded")
                resp.headers.update(decision.headers)
                return resp
        return None
