"""One simulated model call per provider, shared by the realtime routes and the batch engines.

`unique` (a batch line's own id) makes the response id deterministic per line; realtime ids come from the
seeded id counter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forge_dagster.simulator import anthropic_format, openai_format
from forge_dagster.simulator.dice import digest
from forge_dagster.simulator.generation import Generation, generate

if TYPE_CHECKING:
    from forge_dagster.simulator.state import SimState


def openai_chat(
    state: SimState, body: dict[str, Any], fp: str, occurrence: int, key: str,
    *, in_batch: bool = False, unique: str | None = None,
) -> tuple[int, dict[str, Any], Generation | None]:
    """(status, response body, generation) for one chat.completions request."""
    problem = openai_format.validate_chat_body(body)
    if problem:
        return 400, openai_format.error_body(400, problem), None
    cfg = state.config
    if in_batch and state.dice.hit("line_4xx", cfg.line_4xx_rate, fp, occurrence):
        message = "Invalid 'messages[0].content': the simulator rejected this request (line_4xx_rate)."
        return 400, openai_format.error_body(400, message, param="messages"), None
    spec = openai_format.output_spec(body)
    gen = generate(state.dice, cfg, fp, occurrence, spec, openai_format.input_text(body),
                   openai_format.max_tokens(body), str(body.get("model", "")))
    cached = min(gen.input_tokens, state.cached_tokens("openai", key, openai_format.cacheable_prefix(body)))
    completion_id = "chatcmpl-" + (digest(state.seed, "chatcmpl", unique)[:29] if unique
                                   else state.dice.new_id("", "chatcmpl", 29))
    return 200, openai_format.chat_completion(gen, body, completion_id, int(state.now()), cached), gen


def anthropic_message(
    state: SimState, params: dict[str, Any], fp: str, occurrence: int,
    *, in_batch: bool = False, unique: str | None = None,
) -> tuple[int, dict[str, Any], Generation | None]:
    """(status, message or error body, generation) for one Messages API call."""
    problem = anthropic_format.validate_params(params)
    if problem:
        return 400, anthropic_format.error_body(400, problem), None
    cfg = state.config
    if in_batch and state.dice.hit("line_4xx", cfg.line_4xx_rate, fp, occurrence):
        message = "messages.0.content: the simulator rejected this request (line_4xx_rate)."
        return 400, anthropic_format.error_body(400, message), None
    spec = anthropic_format.output_spec(params)
    gen = generate(state.dice, cfg, fp, occurrence, spec, anthropic_format.input_text(params),
                   int(params["max_tokens"]), str(params.get("model", "")))
    message_id = "msg_" + (digest(state.seed, "msg", unique)[:24] if unique else state.dice.new_id("", "msg"))
    return 200, anthropic_format.message(gen, params, message_id, batch=in_batch), gen
