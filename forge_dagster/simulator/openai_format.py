"""OpenAI wire shapes: reading a chat.completions request, writing a chat.completion and error bodies."""

from __future__ import annotations

import json
from typing import Any

from forge_dagster.simulator.generation import Generation, OutputSpec, content_text
from forge_dagster.simulator.schemas import schema_in_text

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                429: "requests", 500: "server_error", 502: "server_error", 503: "server_error"}
_5XX_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}
INSUFFICIENT_QUOTA = ("You exceeded your current quota, please check your plan and billing details. For more "
                      "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.")


def error_body(status: int, message: str, *, type_: str | None = None, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_ or _ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def server_error_body(status: int) -> dict[str, Any]:
    return error_body(status, _5XX_MESSAGES.get(status, "Server error."), type_="server_error")


def validate_chat_body(body: Any) -> str | None:
    """Why a chat.completions body is unacceptable, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not body.get("model"):
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array."
    if body.get("stream"):
        return "stream=true is not supported by the Forge simulator (test double)."
    return None


def input_text(body: dict[str, Any]) -> str:
    """Everything the prompt tokens are counted from."""
    parts = [f"{m.get('role', '')}: {content_text(m.get('content'))}" for m in body.get("messages", [])
             if isinstance(m, dict)]
    if body.get("tools"):
        parts.append(json.dumps(body["tools"]))
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        parts.append(json.dumps(rf.get("json_schema", {})))
    return "\n".join(parts)


def cacheable_prefix(body: dict[str, Any]) -> str:
    """The prompt without its last message: what automatic prompt caching could reuse."""
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    return "\n".join(content_text(m.get("content")) for m in messages[:-1])


def output_spec(body: dict[str, Any]) -> OutputSpec:
    """What shape the answer must take: response_format, a forced tool, or a schema in the prompt."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema")
        return OutputSpec("schema", schema if isinstance(schema, dict) else {"type": "object"})
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type", "function") == "function"]
    choice = body.get("tool_choice")
    if tools and choice not in (None, "none", "auto"):
        wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        tool = next((t for t in tools if t.get("function", {}).get("name") == wanted), tools[0])
        fn = tool.get("function", {})
        return OutputSpec("tool", fn.get("parameters") or {"type": "object"}, fn.get("name"))
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        return OutputSpec("json")
    for message in body.get("messages", []):
        if isinstance(message, dict) and message.get("role") in ("system", "developer", "user"):
            schema = schema_in_text(content_text(message.get("content")))
            if schema is not None:
                return OutputSpec("schema", schema)
    return OutputSpec("text")


def max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return int(value) if isinstance(value, int | float) else None


def chat_completion(gen: Generation, body: dict[str, Any], completion_id: str, created: int,
                    cached_tokens: int = 0) -> dict[str, Any]:
    """A chat.completion object for `gen`."""
    message: dict[str, Any] = {"role": "assistant", "content": gen.text, "refusal": None, "annotations": []}
    finish = {"stop": "stop", "length": "length", "refusal": "stop", "tool": "tool_calls"}[gen.stop]
    if gen.stop == "refusal":
        message["content"] = None
        message["refusal"] = gen.refusal
    elif gen.spec.mode == "tool":
        message["content"] = None
        message["tool_calls"] = [{"id": "call_" + completion_id[-24:], "type": "function",
                                  "function": {"name": gen.spec.tool_name or "tool", "arguments": gen.text}}]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": gen.input_tokens,
            "completion_tokens": gen.output_tokens,
            "total_tokens": gen.input_tokens + gen.output_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": gen.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_forge_sim",
    }
