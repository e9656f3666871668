"""Counting a request's prompt tokens locally, before anything is sent.

OpenAI models are counted with `tiktoken` when the package is installed (`pip install forge-dagster[estimate]`)
and its encoding can be loaded (tiktoken downloads each encoding once into its cache; offline and uncached,
it cannot). Otherwise, and for Anthropic (whose tokenizer is not published as a local package; its
`count_tokens` is an API call), the count is the documented approximation: one token per four characters,
at least one. Counts are of the text a request carries (system prompt, messages, tool definitions, the
response schema), without the few tokens of framing each message adds.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from forge_dagster.core.models import Provider

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
APPROXIMATION = "approx (4 characters a token)"
_O200K = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "omni-moderation")


def approximate_tokens(text: str) -> int:
    """One token per four characters, at least one for any text (0 for none)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


@functools.lru_cache(maxsize=8)
def _encoding(name: str) -> Any | None:
    try:
        import tiktoken  # optional: the `estimate` extra
    except ImportError:
        return None
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # no network and no cached encoding: fall back, once per process
        log.info("tiktoken cannot load %s (%s); token counts are approximated", name, exc)
        return None


def token_counter(provider: Provider | str, model: str) -> tuple[Callable[[str], int], str]:
    """(count(text) -> tokens, the method's name) for a model."""
    if str(provider) == Provider.OPENAI:
        name = "o200k_base" if model.startswith(_O200K) else "cl100k_base"
        encoding = _encoding(name)
        if encoding is not None:
            return (lambda text: len(encoding.encode(text, disallowed_special=())) if text else 0), f"tiktoken {name}"
    return approximate_tokens, APPROXIMATION


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content blocks: their text, or their JSON
        return "\n".join(str(p.get("text")) if isinstance(p, Mapping) and "text" in p else json.dumps(p)
                         for p in value)
    return "" if value is None else json.dumps(value, sort_keys=True)


def prompt_parts(body: Mapping[str, Any]) -> tuple[str, str]:
    """(the shared prefix a prompt cache could keep, the rest) of a request body's prompt text: the prefix
    is the tools, the system prompt, the response schema and every message but the last; the rest is the
    last message (the job's own input)."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, Mapping)]
    prefix = [_text(body.get(k)) for k in ("tools", "system", "instructions", "response_format", "text")
              if body.get(k)]
    prefix += [_text(m.get("content")) for m in messages[:-1]]
    rest = _text(messages[-1].get("content")) if messages else _text(body.get("input"))
    return "\n".join(prefix), rest
