"""Routing a realtime job: its mode when its processor says `auto`, and the tokens a request counts against
its key's limits (estimated before the call, charged after it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from forge_dagster.core.models import Usage
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.providers.requests import render_request

# Every endpoint's prompt: chat and messages, responses (input, instructions, text.format), embeddings and
# moderations (input).
_PROMPT_KEYS = ("system", "messages", "tools", "response_format", "instructions", "input", "text")
AUTO_REALTIME_MAX_TOKENS = 2000  # `auto` processors: a request at most this big runs realtime


def estimate_tokens(body: dict[str, Any]) -> int:
    """Tokens a request may use before it is sent: about four characters a prompt token, plus the
    output budget (`max_tokens`), as providers count it against a tokens-per-minute limit."""
    prompt = {k: body.get(k) for k in _PROMPT_KEYS if body.get(k)}
    text = json.dumps(prompt, ensure_ascii=False, separators=(",", ":"))
    budget = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens") or 0
    return max(1, len(text) // 4) + int(budget)


def charged_tokens(body: dict[str, Any], usage: Usage) -> int:
    """What an answered call counted against the key's tokens per minute: the prompt tokens the provider
    reports plus the output budget it reserved (`max_tokens`), as OpenAI meters it. Settling the
    estimate with this corrects the prompt estimate only; the output budget stays counted."""
    budget = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens") or 0
    return int(usage.input_tokens) + int(budget)


def auto_mode(
    processor: Processor, payload: Any, *, due_at: datetime | None = None, realtime_within_s: float = 3600.0,
    max_tokens: int = AUTO_REALTIME_MAX_TOKENS, now: datetime | None = None,
) -> str:
    """The mode of a job whose processor says `auto`: `realtime` when the job is due within
    `realtime_within_s` (a batch may take up to 24 hours) or when its request is small (the batch discount
    saves little and the answer is wanted now), else `batch`."""
    if due_at is not None and (due_at - (now or datetime.now(UTC))).total_seconds() <= realtime_within_s:
        return "realtime"
    try:
        request = render_request(processor, payload, "auto")
    except ValueError:
        return "batch"  # intake reports the input problem itself
    return "realtime" if estimate_tokens(request.body) <= max_tokens else "batch"
