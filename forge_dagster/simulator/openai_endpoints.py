"""OpenAI wire shapes beyond chat: a Response (`POST /v1/responses`), a CreateEmbeddingResponse
(`POST /v1/embeddings`) and a CreateModerationResponse (`POST /v1/moderations`), as the published OpenAPI
spec describes them (openai/openai-openapi: `CreateResponse`/`Response`, `CreateEmbeddingRequest`/
`CreateEmbeddingResponse`, `CreateModerationRequest`/`CreateModerationResponse`).

Faults: an answer the dice truncate is a Response with `status: incomplete` and
`incomplete_details.reason: max_output_tokens`; a refusal is a `refusal` content part; a schema violation on
embeddings is a vector of the wrong length, and a malformed embedding holds a string among its numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any

from forge_dagster.simulator.dice import rng, unit
from forge_dagster.simulator.generation import Generation, OutputSpec, content_text, estimate_tokens
from forge_dagster.simulator.schemas import schema_in_text

EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                        "text-embedding-ada-002": 1536}
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


# -- responses -------------------------------------------------------------------------------------------
def validate_response_body(body: Any) -> str | None:
    """Why a CreateResponse body is unacceptable, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not body.get("model"):
        return "Missing required parameter: 'model'."
    if not isinstance(body.get("input"), str | list) or not body.get("input"):
        return "Missing required parameter: 'input'."
    if body.get("stream"):
        return "stream=true is not supported by the Forge simulator (test double)."
    return None


def response_input_text(body: dict[str, Any]) -> str:
    """Everything a Response's input tokens are counted from: instructions, input and the text format."""
    value = body.get("input")
    parts = [str(body.get("instructions") or "")]
    if isinstance(value, str):
        parts.append(value)
    else:
        parts += [f"{m.get('role', '')}: {content_text(m.get('content'))}" for m in value if isinstance(m, dict)]
    fmt = (body.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        parts.append(json.dumps(fmt.get("schema", {})))
    return "\n".join(parts)


def response_output_spec(body: dict[str, Any]) -> OutputSpec:
    """`text.format` json_schema (or json_object), else a schema written in the instructions, else text."""
    fmt = (body.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return OutputSpec("schema", schema if isinstance(schema, dict) else {"type": "object"})
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return OutputSpec("json")
    schema = schema_in_text(str(body.get("instructions") or ""))
    return OutputSpec("schema", schema) if schema is not None else OutputSpec("text")


def response_object(gen: Generation, body: dict[str, Any], response_id: str, created: int,
                    cached_tokens: int = 0) -> dict[str, Any]:
    """A Response object for `gen` (status completed, or incomplete when the answer was cut off)."""
    if gen.stop == "refusal":
        content: dict[str, Any] = {"type": "refusal", "refusal": gen.refusal}
    else:
        content = {"type": "output_text", "text": gen.text or "", "annotations": [], "logprobs": []}
    incomplete = gen.stop == "length"
    message = {"id": "msg_" + response_id[5:], "type": "message", "role": "assistant",
               "status": "incomplete" if incomplete else "completed", "content": [content]}
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    return {
        "id": response_id, "object": "response", "created_at": float(created),
        "completed_at": None if incomplete else float(created),
        "status": "incomplete" if incomplete else "completed", "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"), "output": [message], "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
        "store": True, "temperature": float(body.get("temperature", 1.0)), "text": {"format": fmt},
        "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled", "user": None,
        "metadata": {},
        "usage": {"input_tokens": gen.input_tokens,
                  "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
                  "output_tokens": gen.output_tokens,
                  "output_tokens_details": {"reasoning_tokens": gen.reasoning_tokens},
                  "total_tokens": gen.input_tokens + gen.output_tokens},
    }


# -- embeddings ------------------------------------------------------------------------------------------
def _inputs(body: dict[str, Any]) -> list[Any] | None:
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    return value if isinstance(value, list) and value else None


def validate_embedding_body(body: Any) -> str | None:
    """Why a CreateEmbeddingRequest is unacceptable, or None (as OpenAI words it, near enough)."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not body.get("model"):
        return "Missing required parameter: 'model'."
    inputs = _inputs(body)
    if inputs is None or any(isinstance(i, str) and not i for i in inputs):
        return "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
    if len(inputs) > 2048:
        return "'$.input' is too long: at most 2048 inputs per request."
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not str(body["model"]).startswith("text-embedding-3"):
            return f"This model does not support specifying dimensions: {body['model']}."
        if not isinstance(dimensions, int) or dimensions < 1:
            return "Invalid value for 'dimensions': it must be an integer of at least 1."
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "Invalid value for 'encoding_format': use 'float' or 'base64'."
    return None


def embedding_dimensions(body: dict[str, Any]) -> int:
    """The vector length the request asks for (its `dimensions`, else the model's own length)."""
    return int(body.get("dimensions") or EMBEDDING_DIMENSIONS.get(str(body.get("model")), 1536))


def embedding_input_tokens(body: dict[str, Any]) -> int:
    return sum(estimate_tokens(i if isinstance(i, str) else json.dumps(i)) for i in _inputs(body) or [])


def _vector(seed: int, text: Any, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    r = rng(seed, "embedding", text, dimensions)
    values = [r.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def embedding_response(seed: int, body: dict[str, Any], *, wrong_length: bool = False,
                       malformed: bool = False) -> dict[str, Any]:
    """A CreateEmbeddingResponse: one embedding per input, in input order."""
    dimensions = embedding_dimensions(body)
    data = []
    for index, text in enumerate(_inputs(body) or []):
        vector: list[Any] = _vector(seed, text, dimensions)
        if wrong_length:
            vector = vector[: max(1, dimensions // 2)]
        if malformed:
            vector[0] = "NaN"
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = embedding_input_tokens(body)
    return {"object": "list", "data": data, "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# -- moderations -----------------------------------------------------------------------------------------
def validate_moderation_body(body: Any) -> str | None:
    """Why a CreateModerationRequest is unacceptable, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    inputs = _inputs(body)
    if inputs is None:
        return "Missing required parameter: 'input'."
    return None


def _moderation_result(seed: int, text: Any) -> dict[str, Any]:
    scores = {c: round(unit(seed, "moderation", c, text) ** 30, 6) for c in MODERATION_CATEGORIES}
    categories = {c: s > 0.5 for c, s in scores.items()}
    return {"flagged": any(categories.values()), "categories": categories, "category_scores": scores,
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES}}


def moderation_response(seed: int, body: dict[str, Any], moderation_id: str) -> dict[str, Any]:
    """A CreateModerationResponse: one result per input, flagged when some category scores over 0.5."""
    return {"id": moderation_id, "model": body.get("model") or "omni-moderation-latest",
            "results": [_moderation_result(seed, text) for text in _inputs(body) or []]}
