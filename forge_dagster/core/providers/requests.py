"""The provider's own request body for one job: OpenAI chat.completions or Anthropic messages, with the
structured-output keys each provider takes (OpenAI `response_format` json_schema, Anthropic's forced tool)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forge_dagster.core.models import CUSTOM_ID_RE, Provider, ProviderRequest
from forge_dagster.core.platform.processors import Processor, render_template

TOOL_NAME = "emit_result"  # the one tool an Anthropic json-policy request forces the model to call


def structured_output(processor: Processor) -> dict[str, Any]:
    """The body keys that request structured output under the json policy (empty otherwise). Built once per
    processor and shared by every rendered request (treat request bodies as read-only)."""
    return processor.memo("requests.structured_output", lambda: _structured_output(processor))


def _structured_output(processor: Processor) -> dict[str, Any]:
    if processor.output_policy != "json":
        return {}
    if processor.provider == Provider.OPENAI:
        schema = {"name": processor.name, "schema": processor.response_schema, "strict": False}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    description = processor.description or f"Return the result of {processor.name}."
    tool = {"name": TOOL_NAME, "description": description, "input_schema": processor.response_schema}
    return {"tools": [tool], "tool_choice": {"type": "tool", "name": TOOL_NAME}}


def render_request(processor: Processor, job_input: Mapping[str, Any], custom_id: str) -> ProviderRequest:
    """The request `processor` sends for one job input, under `custom_id`."""
    if not CUSTOM_ID_RE.fullmatch(custom_id):
        raise ValueError(f"custom_id {custom_id!r} does not match {CUSTOM_ID_RE.pattern}")
    user = render_template(processor.template, job_input)
    system = processor.system_prompt
    body: dict[str, Any] = {"model": processor.model, "max_tokens": processor.max_tokens}
    if processor.provider == Provider.OPENAI:
        messages = [{"role": "system", "content": system}] if system else []
        body["messages"] = [*messages, {"role": "user", "content": user}]
    else:
        if system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": user}]
    if processor.temperature is not None:
        body["temperature"] = processor.temperature
    body.update(structured_output(processor))
    return ProviderRequest(custom_id=custom_id, body=body)
