"""The provider's own request body for one job, per endpoint: OpenAI chat.completions, responses, embeddings
or moderations, or Anthropic messages, with the structured-output keys each takes (chat `response_format`
json_schema, responses `text.format` json_schema, Anthropic's forced tool).

Prompt caching (a processor's `cache:`): the shared prefix comes first and is built once per processor, so
it is byte-identical in every request of a batch. Anthropic: the system prompt becomes one text block with
`cache_control` (and the forced tool carries it too: tools precede the system prompt in the cached prefix).
OpenAI: `prompt_cache_key` names the processor version, so its requests are routed to the same cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forge_dagster.core.models import CUSTOM_ID_RE, Provider, ProviderRequest
from forge_dagster.core.platform.processors import Processor, TemplateError, render_template

TOOL_NAME = "emit_result"  # the one tool an Anthropic json-policy request forces the model to call


def structured_output(processor: Processor) -> dict[str, Any]:
    """The body keys that request structured output under the json policy (empty otherwise). Built once per
    processor and shared by every rendered request (treat request bodies as read-only)."""
    return processor.memo("requests.structured_output", lambda: _structured_output(processor))


def cache_control(processor: Processor) -> dict[str, Any] | None:
    """Anthropic's cache breakpoint for the processor's TTL (None when the processor does not cache)."""
    if processor.cache is None:
        return None
    return {"type": "ephemeral", "ttl": processor.cache.ttl}


def prompt_cache_key(processor: Processor) -> str:
    """OpenAI's `prompt_cache_key`: one per processor version."""
    return f"forge:{processor.name}:{processor.version}"


def _system_blocks(processor: Processor) -> list[dict[str, Any]]:
    return [{"type": "text", "text": processor.system_prompt, "cache_control": cache_control(processor)}]


def _structured_output(processor: Processor) -> dict[str, Any]:
    if processor.output_policy != "json" or processor.fixed_output:
        return {}
    if processor.endpoint == "responses":
        schema = {"type": "json_schema", "name": processor.name, "schema": processor.response_schema, "strict": False}
        return {"text": {"format": schema}}
    if processor.provider == Provider.OPENAI:
        schema = {"name": processor.name, "schema": processor.response_schema, "strict": False}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    description = processor.description or f"Return the result of {processor.name}."
    tool = {"name": TOOL_NAME, "description": description, "input_schema": processor.response_schema}
    if processor.cache is not None:
        tool["cache_control"] = cache_control(processor)
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": TOOL_NAME}}


def render_request(processor: Processor, job_input: Mapping[str, Any], custom_id: str) -> ProviderRequest:
    """The request `processor` sends for one job input, under `custom_id`."""
    if not CUSTOM_ID_RE.fullmatch(custom_id):
        raise ValueError(f"custom_id {custom_id!r} does not match {CUSTOM_ID_RE.pattern}")
    user = render_template(processor.template, job_input)
    if processor.fixed_output:
        return ProviderRequest(custom_id, _fixed_output_body(processor, user), processor.endpoint)
    system = processor.system_prompt
    body: dict[str, Any] = {"model": processor.model}
    if processor.endpoint == "responses":
        body["input"] = user
        if system:
            body["instructions"] = system
        body["max_output_tokens"] = processor.max_tokens
    elif processor.provider == Provider.OPENAI:
        body["max_tokens"] = processor.max_tokens
        messages = [{"role": "system", "content": system}] if system else []
        body["messages"] = [*messages, {"role": "user", "content": user}]
    else:
        body["max_tokens"] = processor.max_tokens
        if system and processor.cache is not None:
            body["system"] = processor.memo("requests.system_blocks", lambda: _system_blocks(processor))
        elif system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": user}]
    if processor.cache is not None and processor.provider == Provider.OPENAI:
        body["prompt_cache_key"] = prompt_cache_key(processor)
    if processor.temperature is not None:
        body["temperature"] = processor.temperature
    body.update(structured_output(processor))
    return ProviderRequest(custom_id, body, processor.endpoint)


def _fixed_output_body(processor: Processor, text: str) -> dict[str, Any]:
    """An embeddings or moderations body; an input that renders empty is refused (the API refuses it)."""
    if not text.strip():
        raise TemplateError("input", f"the template renders an empty {processor.endpoint} input")
    body: dict[str, Any] = {"model": processor.model, "input": text}
    if processor.endpoint == "embeddings":
        body["encoding_format"] = "float"
        if processor.dimensions is not None:
            body["dimensions"] = processor.dimensions
    return body
