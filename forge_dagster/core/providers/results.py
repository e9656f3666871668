"""Normalise provider result lines and realtime responses into `ResultItem`s, and match them to the
custom_ids we sent (never by line order). OpenAI's responses, embeddings and moderations bodies are read in
openai_results.py.

Normalised fields:
- `stop_reason`: `stop` (OpenAI stop / Anthropic end_turn, stop_sequence), `length` (length, max_tokens,
  model_context_window_exceeded), `refusal` (refusal, content_filter, or an OpenAI `message.refusal`),
  `tool_use` (tool_calls, function_call, tool_use), otherwise None.
- `usage.input_tokens` counts every prompt token, cached or not (OpenAI prompt_tokens; Anthropic input +
  cache read + cache creation); `cached_input_tokens` the cache reads (OpenAI
  `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`); `cache_write_5m_tokens` /
  `cache_write_1h_tokens` Anthropic's `cache_creation_input_tokens` by its `cache_creation` TTL split;
  `reasoning_tokens` OpenAI's reasoning tokens (Anthropic reports thinking inside output_tokens).
- Malformed output (text that is not the JSON a processor wants, unparseable tool arguments) is still a
  SUCCEEDED item: validation decides acceptance. Unparseable tool arguments leave `tool_input` None.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from forge_dagster.core.models import ErrorClass, ProviderError, ResultItem, ResultOutcome, Usage
from forge_dagster.core.providers.errors import classify_error_object, classify_status
from forge_dagster.core.providers.openai_results import (
    body_kind,
    embedding_item,
    moderation_item,
    responses_item,
)

log = logging.getLogger(__name__)

OPENAI_REQUEUE_CODES = frozenset({"batch_expired", "batch_cancelled", "batch_canceled"})
ANTHROPIC_REQUEUE_TYPES = frozenset({"expired", "canceled", "cancelled"})

_OPENAI_STOP = {
    "stop": "stop",
    "length": "length",
    "content_filter": "refusal",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}
_ANTHROPIC_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
    "tool_use": "tool_use",
}
_RANK = {ResultOutcome.SUCCEEDED: 2, ResultOutcome.ERRORED: 1, ResultOutcome.REQUEUE: 0}


def openai_completion_item(
    custom_id: str, body: Mapping[str, Any], *, raw: dict[str, Any] | None = None
) -> ResultItem:
    """A SUCCEEDED item from an OpenAI chat completion body."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    stop_reason = _OPENAI_STOP.get(choice.get("finish_reason") or "")
    if message.get("refusal"):
        stop_reason = "refusal"
    tool_input = None
    calls = message.get("tool_calls") or []
    function = (calls[0].get("function") if calls else None) or message.get("function_call")
    if isinstance(function, Mapping):
        tool_input = _json_object(function.get("arguments"))
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    usage = body.get("usage") or {}
    return ResultItem(
        custom_id=custom_id,
        outcome=ResultOutcome.SUCCEEDED,
        status_code=200,
        text=content if isinstance(content, str) else None,
        tool_input=tool_input,
        stop_reason=stop_reason,
        usage=Usage(
            input_tokens=_int(usage.get("prompt_tokens")),
            output_tokens=_int(usage.get("completion_tokens")),
            cached_input_tokens=_int((usage.get("prompt_tokens_details") or {}).get("cached_tokens")),
            reasoning_tokens=_int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens")),
        ),
        raw=raw if raw is not None else dict(body),
    )


_OTHER_ENDPOINTS = {"responses": responses_item, "embeddings": embedding_item, "moderations": moderation_item}


def openai_body_item(
    custom_id: str, body: Mapping[str, Any], *, raw: dict[str, Any] | None = None
) -> ResultItem:
    """The item for any OpenAI answer body (chat completion, Response, embeddings or moderations), read by
    its shape; see openai_results.py for the endpoints other than chat."""
    parse = _OTHER_ENDPOINTS.get(body_kind(body))
    if parse is None:
        return openai_completion_item(custom_id, body, raw=raw)
    return parse(custom_id, body, raw if raw is not None else dict(body))


def _total(parse: Callable[[str, Mapping[str, Any]], ResultItem]) -> Callable[[Mapping[str, Any]], ResultItem | None]:
    """A line parser that never raises: a line of the wrong shape (a list where an object belongs, a
    number for a status...) becomes an ERRORED item of its own (transient: the provider wrote it badly,
    so the request is tried again), named by its custom_id; the other lines are not affected."""

    @functools.wraps(parse)
    def parse_line(line: Mapping[str, Any]) -> ResultItem | None:
        custom_id = line.get("custom_id") if isinstance(line, Mapping) else None
        if not isinstance(custom_id, str):
            return None
        try:
            return parse(custom_id, line)
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            problem = ProviderError(ErrorClass.TRANSIENT, f"malformed result line: {type(exc).__name__}: {exc}")
            return ResultItem(custom_id, ResultOutcome.ERRORED, error=problem, raw=dict(line))

    return parse_line


@_total
def openai_batch_item(custom_id: str, line: Mapping[str, Any]) -> ResultItem:
    """The item for one line of an OpenAI output or error file; None if the line has no custom_id."""
    raw = dict(line)
    error = line.get("error")
    response = line.get("response") or {}
    status_code = response.get("status_code")
    if isinstance(error, Mapping) and str(error.get("code") or "") in OPENAI_REQUEUE_CODES:
        return ResultItem(custom_id, ResultOutcome.REQUEUE, status_code=status_code, raw=raw)
    body = response.get("body")
    if error is None and status_code == 200 and isinstance(body, Mapping):
        return openai_body_item(custom_id, body, raw=raw)
    # An error object, or a non-200 status inside a line whose `error` is null: the request failed.
    if isinstance(status_code, int):
        problem = classify_status(status_code, body if isinstance(body, Mapping) else error)
    elif isinstance(error, Mapping):
        problem = classify_error_object(error)
    else:
        problem = classify_error_object({"message": "result line without status or error"})
    return ResultItem(custom_id, ResultOutcome.ERRORED, status_code=status_code, error=problem, raw=raw)


def anthropic_message_item(
    custom_id: str, message: Mapping[str, Any], *, raw: dict[str, Any] | None = None
) -> ResultItem:
    """A SUCCEEDED item from an Anthropic Message."""
    texts: list[str] = []
    tool_input = None
    for block in message.get("content") or []:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use" and tool_input is None:
            tool_input = block.get("input") if isinstance(block.get("input"), dict) else None
    usage = message.get("usage") or {}
    cache_read = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    write_5m, write_1h = _cache_write_split(usage.get("cache_creation"), written)
    return ResultItem(
        custom_id=custom_id,
        outcome=ResultOutcome.SUCCEEDED,
        status_code=200,
        text="".join(texts) if texts else None,
        tool_input=tool_input,
        stop_reason=_ANTHROPIC_STOP.get(message.get("stop_reason") or ""),
        usage=Usage(
            input_tokens=_int(usage.get("input_tokens")) + cache_read + written,
            output_tokens=_int(usage.get("output_tokens")),
            cached_input_tokens=cache_read,
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
        ),
        raw=raw if raw is not None else dict(message),
    )


@_total
def anthropic_batch_item(custom_id: str, line: Mapping[str, Any]) -> ResultItem:
    """The item for one line of an Anthropic results stream; None if the line has no custom_id."""
    raw = dict(line)
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), Mapping):
        return anthropic_message_item(custom_id, result["message"], raw=raw)
    if kind in ANTHROPIC_REQUEUE_TYPES:
        return ResultItem(custom_id, ResultOutcome.REQUEUE, raw=raw)
    problem = classify_error_object(result.get("error") or {"message": f"result type {kind!r}"})
    return ResultItem(
        custom_id, ResultOutcome.ERRORED, status_code=problem.status_code, error=problem, raw=raw
    )


def match_results(
    expected_custom_ids: Collection[str], items: Iterable[ResultItem], *, provider_batch_id: str
) -> list[ResultItem]:
    """Exactly one item per expected custom_id, in the order given: missing ids become REQUEUE, ids we
    did not send are ignored (and logged); of duplicates the most complete one wins
    (SUCCEEDED > ERRORED > REQUEUE, then the first seen)."""
    expected = list(dict.fromkeys(expected_custom_ids))
    wanted = set(expected)
    chosen: dict[str, ResultItem] = {}
    unexpected: list[str] = []
    duplicates = 0
    for item in items:
        if item.custom_id not in wanted:
            unexpected.append(item.custom_id)
            continue
        previous = chosen.get(item.custom_id)
        if previous is not None:
            duplicates += 1
        if previous is None or _RANK[item.outcome] > _RANK[previous.outcome]:
            chosen[item.custom_id] = item
    if unexpected:
        log.warning(
            "batch %s: ignored %d result(s) for custom_ids we did not send, e.g. %s",
            provider_batch_id,
            len(unexpected),
            unexpected[:5],
        )
    if duplicates:
        log.warning("batch %s: %d duplicate result line(s) for one custom_id", provider_batch_id, duplicates)
    missing = [cid for cid in expected if cid not in chosen]
    if missing:
        log.info("batch %s: %d expected result(s) missing, requeued", provider_batch_id, len(missing))
    return [chosen.get(cid) or ResultItem(cid, ResultOutcome.REQUEUE) for cid in expected]


def _cache_write_split(split: Any, written: int) -> tuple[int, int]:
    """(5m, 1h) cache-write tokens from Anthropic's `cache_creation` object; without it (older API
    versions) every written token is a 5-minute write, the default TTL. The split never exceeds `written`."""
    if not isinstance(split, Mapping):
        return written, 0
    write_1h = min(_int(split.get("ephemeral_1h_input_tokens")), written)
    return written - write_1h, write_1h


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
