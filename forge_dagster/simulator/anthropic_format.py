"""Anthropic wire shapes: reading a messages request, writing a message and error bodies."""

from __future__ import annotations

import json
from typing import Any

from forge_dagster.simulator.generation import Generation, OutputSpec, content_text
from forge_dagster.simulator.schemas import schema_in_text

CREDIT_BALANCE = ("Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
                  "to upgrade or purchase credits.")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                409: "invalid_request_error", 429: "rate_limit_error", 500: "api_error", 502: "api_error",
                503: "api_error", 529: "overloaded_error"}
_5XX_MESSAGES = {500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable",
                 529: "Overloaded"}
_STOP = {"stop": "end_turn", "length": "max_tokens", "refusal": "refusal", "tool": "tool_use"}


def error_body(status: int, message: str, *, type_: str | None = None, request_id: str | None = None
               ) -> dict[str, Any]:
    """Anthropic's error envelope."""
    body: dict[str, Any] = {"type": "error",
                            "error": {"type": type_ or _ERROR_TYPES.get(status, "api_error"), "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


def server_error_body(status: int) -> dict[str, Any]:
    return error_body(status, _5XX_MESSAGES.get(status, "Internal server error"))


def validate_params(params: Any) -> str | None:
    """Why Messages API params are unacceptable, or None."""
    if not isinstance(params, dict):
        return "params: Input should be an object"
    if not params.get("model"):
        return "model: Field required"
    if not isinstance(params.get("max_tokens"), int) or params["max_tokens"] < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if params.get("stream"):
        return "stream: streaming is not supported by the Forge simulator (test double)"
    return None


def _system_text(params: dict[str, Any]) -> str:
    return content_text(params.get("system"))


def input_text(params: dict[str, Any]) -> str:
    """Everything the input tokens are counted from."""
    parts = [_system_text(params)]
    parts += [f"{m.get('role', '')}: {content_text(m.get('content'))}" for m in params.get("messages", [])
              if isinstance(m, dict)]
    if params.get("tools"):
        parts.append(json.dumps(params["tools"]))
    return "\n".join(p for p in parts if p)


def cache_prefix(params: dict[str, Any]) -> tuple[str, str] | None:
    """(prefix text, ttl) up to the last `cache_control` breakpoint among the tools and system blocks (the
    cached prefix is tools, then system), or None when the request marks none. Breakpoints in messages are
    not simulated."""
    marked: list[tuple[str, dict[str, Any]]] = []
    for tool in params.get("tools") or []:
        if isinstance(tool, dict):
            marked.append((json.dumps(tool, sort_keys=True), tool))
    system = params.get("system")
    for block in system if isinstance(system, list) else []:
        if isinstance(block, dict):
            marked.append((str(block.get("text") or ""), block))
    last = max((i for i, (_, part) in enumerate(marked) if isinstance(part.get("cache_control"), dict)),
               default=None)
    if last is None:
        return None
    ttl = str(marked[last][1]["cache_control"].get("ttl") or "5m")
    return "\n".join(text for text, _ in marked[: last + 1]), ttl


def output_spec(params: dict[str, Any]) -> OutputSpec:
    """Forced tool (tool_choice tool/any, or one tool with auto), output_config json_schema, prompt schema."""
    fmt = (params.get("output_config") or {}).get("format") or params.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return OutputSpec("schema", fmt["schema"])
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict) and "input_schema" in t]
    choice = params.get("tool_choice") or {"type": "auto"}
    forced = choice.get("type") in ("tool", "any") or (choice.get("type") == "auto" and len(tools) == 1)
    if tools and forced:
        tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
        return OutputSpec("tool", tool.get("input_schema") or {"type": "object"}, tool.get("name"))
    texts = [_system_text(params)] + [content_text(m.get("content")) for m in params.get("messages", [])
                                      if isinstance(m, dict) and m.get("role") == "user"]
    for text in texts:
        schema = schema_in_text(text)
        if schema is not None:
            return OutputSpec("schema", schema)
    return OutputSpec("text")


def message(gen: Generation, params: dict[str, Any], message_id: str, *, batch: bool = False,
            cache_read: int = 0, cache_write: int = 0, ttl: str = "5m") -> dict[str, Any]:
    """A Messages API `message` object for `gen`; `input_tokens` counts what was neither read from nor
    written to the prompt cache, as the API's does."""
    stop = _STOP[gen.stop]
    parsed = gen.parsed()
    if gen.stop == "refusal":
        content: list[dict[str, Any]] = [{"type": "text", "text": gen.refusal or ""}]
    elif gen.spec.mode == "tool" and gen.stop == "tool" and isinstance(parsed, dict):
        content = [{"type": "tool_use", "id": "toolu_" + message_id[-24:], "name": gen.spec.tool_name,
                    "input": parsed}]
    else:
        content = [{"type": "text", "text": gen.text or ""}]
        if stop == "tool_use":
            stop = "end_turn"  # the model did not manage a well-formed tool call
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": params.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": max(0, gen.input_tokens - cache_read - cache_write),
                  "output_tokens": gen.output_tokens,
                  "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read,
                  "cache_creation": {"ephemeral_5m_input_tokens": cache_write if ttl != "1h" else 0,
                                     "ephemeral_1h_input_tokens": cache_write if ttl == "1h" else 0},
                  "service_tier": "batch" if batch else "standard"},
    }
