"""Previewing a processor: the exact provider request it would send, without sending it, and the verdict
on a sample answer (with the repair request that would follow a rejection).

The batch line is what the batch input carries (OpenAI's JSONL line, Anthropic's `requests` entry,
built by `providers/wire.py` like the ports do); the realtime request is the same body posted to the
provider's endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forge_dagster.core.models import Provider, ProviderRequest, ResultItem, ResultOutcome
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.repair import render_job_request, repair_for, with_repair
from forge_dagster.core.platform.validation import validate_result
from forge_dagster.core.providers.wire import anthropic_batch_entry, openai_batch_line, openai_url

PREVIEW_CUSTOM_ID = "preview"


def _wire(processor: Processor, request: ProviderRequest) -> dict[str, Any]:
    if processor.provider == Provider.OPENAI:
        line, endpoint = openai_batch_line(request), f"POST {openai_url(request.endpoint)}"
    else:
        line, endpoint = anthropic_batch_entry(request), "POST /v1/messages"
    return {"batch_line": line, "realtime": {"endpoint": endpoint, "body": request.body}}


def sample_item(text: str, *, stop_reason: str | None = "stop") -> ResultItem:
    """A sample answer as a successful provider result line carrying `text`."""
    return ResultItem(PREVIEW_CUSTOM_ID, ResultOutcome.SUCCEEDED, status_code=200, text=text, stop_reason=stop_reason)


def preview_request(processor: Processor, job_input: Mapping[str, Any], sample: str | None = None) -> dict[str, Any]:
    """The request for `job_input` (batch line and realtime form) and, given a sample answer, its
    verdict and the repair request a rejection would lead to (when a repair is allowed)."""
    request = render_job_request(processor, job_input, PREVIEW_CUSTOM_ID)
    shown: dict[str, Any] = {"provider": str(processor.provider), "model": processor.model,
                             "endpoint": processor.endpoint, "output_policy": processor.output_policy, **_wire(processor, request)}
    if sample is None:
        return shown
    item = sample_item(sample)
    verdict = validate_result(item, processor)
    shown["sample"] = {"accepted": verdict.accepted, "reason": verdict.reason, "errors": verdict.errors,
                       "output": verdict.output}
    repair = repair_for(processor, item, 1) if processor.max_repair_attempts else None
    if repair is not None:
        shown["repair"] = _wire(processor, with_repair(processor, request, repair))
    return shown
