"""Normalise the answers of OpenAI's responses, embeddings and moderations endpoints into `ResultItem`s
(chat completions are read in results.py, which dispatches here by the body's shape).

- responses: the text of the `message` output items; `status: incomplete` is a truncation (`length`) when
  `incomplete_details.reason` is max_output_tokens and a refusal when it is content_filter; a `refusal`
  content part is a refusal; `status: failed` is an errored item with the response's error. Usage comes
  from `input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens` and
  `output_tokens_details.reasoning_tokens`.
- embeddings: the first embedding as little-endian float32 bytes in `vector` (its place in `raw` says
  where it went); an embedding that is not a list of numbers leaves `vector` None and `raw` whole, so
  validation rejects it with the evidence kept. Usage: `prompt_tokens`.
- moderations: the first result object as `tool_input`; moderations report no usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from forge_dagster.core.models import ResultItem, ResultOutcome, Usage
from forge_dagster.core.providers.errors import classify_error_object

VECTOR_PLACEHOLDER = "forge:vector"  # what replaces a stored embedding inside `raw`
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "refusal"}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def responses_item(custom_id: str, body: Mapping[str, Any], raw: dict[str, Any]) -> ResultItem:
    """The item for a Response object."""
    usage = _map(body.get("usage"))
    normalised = Usage(
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cached_input_tokens=_int(_map(usage.get("input_tokens_details")).get("cached_tokens")),
        reasoning_tokens=_int(_map(usage.get("output_tokens_details")).get("reasoning_tokens")),
    )
    status = body.get("status")
    if status == "failed":
        problem = classify_error_object(_map(body.get("error")) or {"message": "response status failed"})
        return ResultItem(custom_id, ResultOutcome.ERRORED, status_code=200, error=problem, usage=normalised,
                          raw=raw)
    texts: list[str] = []
    stop_reason = "stop" if status == "completed" else None
    for item in body.get("output") or []:
        if not isinstance(item, Mapping) or item.get("type") != "message":
            continue
        for part in item.get("content") or []:
            kind = _map(part).get("type")
            if kind == "output_text":
                texts.append(str(part.get("text") or ""))
            elif kind == "refusal":
                stop_reason = "refusal"
    if status == "incomplete":
        reason = _map(body.get("incomplete_details")).get("reason")
        stop_reason = _INCOMPLETE.get(str(reason), "length")
    elif status != "completed":
        stop_reason = f"status {status}"  # in_progress, queued, cancelled: not a finished answer
    return ResultItem(custom_id, ResultOutcome.SUCCEEDED, status_code=200, text="".join(texts) if texts else None,
                      stop_reason=stop_reason, usage=normalised, raw=raw)


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and all(type(v) is float or type(v) is int for v in values)


def embedding_item(custom_id: str, body: Mapping[str, Any], raw: dict[str, Any]) -> ResultItem:
    """The item for a CreateEmbeddingResponse (one input per request: its first embedding)."""
    data = body.get("data")
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], Mapping) else {}
    values = first.get("embedding")
    usage = Usage(input_tokens=_int(_map(body.get("usage")).get("prompt_tokens")))
    vector = None
    if _numbers(values) and values:
        with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, which validation refuses
            vector = np.asarray(values, dtype="<f4").tobytes()
        raw = _without_embedding(raw, len(values))
    return ResultItem(custom_id, ResultOutcome.SUCCEEDED, status_code=200, stop_reason="stop", usage=usage,
                      raw=raw, vector=vector)


def _without_embedding(raw: dict[str, Any], length: int) -> dict[str, Any]:
    """`raw` with the first embedding's floats replaced by a note (they are stored as the vector)."""
    def strip(body: Mapping[str, Any]) -> dict[str, Any]:
        data = list(body["data"])
        data[0] = {**data[0], "embedding": f"{VECTOR_PLACEHOLDER} ({length} floats)"}
        return {**body, "data": data}

    response = raw.get("response")
    if isinstance(response, Mapping) and isinstance(response.get("body"), Mapping):
        return {**raw, "response": {**response, "body": strip(response["body"])}}
    return strip(raw)


def moderation_item(custom_id: str, body: Mapping[str, Any], raw: dict[str, Any]) -> ResultItem:
    """The item for a CreateModerationResponse (one input per request: its first result)."""
    results = body.get("results")
    first = results[0] if isinstance(results, list) and results and isinstance(results[0], dict) else None
    return ResultItem(custom_id, ResultOutcome.SUCCEEDED, status_code=200, tool_input=first, stop_reason="stop",
                      raw=raw)


def body_kind(body: Mapping[str, Any]) -> str:
    """Which endpoint answered: `responses`, `embeddings`, `moderations` or `chat`, from the body's shape."""
    kind = body.get("object")
    if kind == "response":
        return "responses"
    if kind == "list" and isinstance(body.get("data"), list):
        return "embeddings"
    if "results" in body and "choices" not in body:
        return "moderations"
    return "chat"
