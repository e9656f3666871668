"""One simulated model call per provider, shared by the realtime routes and the batch engines.

`unique` (a batch line's own id) makes the response id deterministic per line; realtime ids come from the
seeded id counter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forge_dagster.simulator import anthropic_format, openai_endpoints, openai_format
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


def openai_response(
    state: SimState, body: dict[str, Any], fp: str, occurrence: int, key: str,
    *, in_batch: bool = False, unique: str | None = None,
) -> tuple[int, dict[str, Any], Generation | None]:
    """(status, Response or error body, generation) for one responses request."""
    problem = openai_endpoints.validate_response_body(body)
    if problem:
        return 400, openai_format.error_body(400, problem), None
    if in_batch and state.dice.hit("line_4xx", state.config.line_4xx_rate, fp, occurrence):
        return 400, openai_format.error_body(400, "Invalid 'input': the simulator rejected this request "
                                             "(line_4xx_rate).", param="input"), None
    spec = openai_endpoints.response_output_spec(body)
    budget = body.get("max_output_tokens")
    gen = generate(state.dice, state.config, fp, occurrence, spec, openai_endpoints.response_input_text(body),
                   int(budget) if isinstance(budget, int) else None, str(body.get("model", "")))
    prefix = str(body.get("instructions") or "")
    cached = min(gen.input_tokens, state.cached_tokens("openai", key, prefix)) if prefix else 0
    response_id = "resp_" + (digest(state.seed, "resp", unique)[:40] if unique else state.dice.new_id("", "resp", 40))
    return 200, openai_endpoints.response_object(gen, body, response_id, int(state.now()), cached), gen


def openai_embedding(
    state: SimState, body: dict[str, Any], fp: str, occurrence: int, key: str,
    *, in_batch: bool = False, unique: str | None = None,
) -> tuple[int, dict[str, Any], int]:
    """(status, CreateEmbeddingResponse or error body, tokens) for one embeddings request. The schema
    violation knob gives a vector of the wrong length, the malformed knob a string among the numbers."""
    problem = openai_endpoints.validate_embedding_body(body)
    if problem:
        return 400, openai_format.error_body(400, problem, param="input"), 0
    cfg, about = state.config, (fp, occurrence)
    if in_batch and state.dice.hit("line_4xx", cfg.line_4xx_rate, *about):
        return 400, openai_format.error_body(400, "Invalid 'input': the simulator rejected this request "
                                             "(line_4xx_rate).", param="input"), 0
    answer = openai_endpoints.embedding_response(
        state.seed, body, wrong_length=state.dice.hit("schema_violation", cfg.schema_violation_rate, *about),
        malformed=state.dice.hit("malformed", cfg.malformed_rate, *about))
    return 200, answer, answer["usage"]["prompt_tokens"]


def openai_moderation(
    state: SimState, body: dict[str, Any], fp: str, occurrence: int, key: str,
    *, in_batch: bool = False, unique: str | None = None,
) -> tuple[int, dict[str, Any], int]:
    """(status, CreateModerationResponse or error body, tokens) for one moderations request."""
    problem = openai_endpoints.validate_moderation_body(body)
    if problem:
        return 400, openai_format.error_body(400, problem, param="input"), 0
    if in_batch and state.dice.hit("line_4xx", state.config.line_4xx_rate, fp, occurrence):
        return 400, openai_format.error_body(400, "Invalid 'input': the simulator rejected this request "
                                             "(line_4xx_rate).", param="input"), 0
    moderation_id = "modr-" + (digest(state.seed, "modr", unique)[:29] if unique
                               else state.dice.new_id("", "modr", 29))
    return 200, openai_endpoints.moderation_response(state.seed, body, moderation_id), 0


def openai_any(
    state: SimState, url: str, body: dict[str, Any], fp: str, occurrence: int, key: str,
    *, in_batch: bool = False, unique: str | None = None,
) -> tuple[int, dict[str, Any], int, int]:
    """(status, body, input tokens, output tokens) for a request to any OpenAI endpoint the simulator
    serves, by its path (a batch line's `url`)."""
    if url in ("/v1/embeddings", "/v1/moderations"):
        call = openai_embedding if url == "/v1/embeddings" else openai_moderation
        status, answer, tokens = call(state, body, fp, occurrence, key, in_batch=in_batch, unique=unique)
        return status, answer, tokens, 0
    call_gen = openai_response if url == "/v1/responses" else openai_chat
    status, answer, gen = call_gen(state, body, fp, occurrence, key, in_batch=in_batch, unique=unique)
    return status, answer, (gen.input_tokens if gen else 0), (gen.output_tokens if gen else 0)


def anthropic_message(
    state: SimState, params: dict[str, Any], fp: str, occurrence: int,
    *, in_batch: bool = False, unique: str | None = None, key: str = "",
) -> tuple[int, dict[str, Any], Generation | None]:
    """(status, message or error body, generation) for one Messages API call; `cache_control` breakpoints
    write, then read, the prompt cache of `key`."""
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
    marked = anthropic_format.cache_prefix(params)
    read, written = state.cache_breakpoint(key, *marked) if marked else (0, 0)
    read, written = min(read, gen.input_tokens), min(written, gen.input_tokens - min(read, gen.input_tokens))
    return 200, anthropic_format.message(gen, params, message_id, batch=in_batch, cache_read=read,
                                         cache_write=written, ttl=marked[1] if marked else "5m"), gen
