"""The provider's batch limits, checked before anything is uploaded (DESIGN.md section 5)."""

from __future__ import annotations

from forge_dagster.core.models import CUSTOM_ID_RE, EMBEDDING_BATCH_INPUTS, LIMITS, BatchSpec, Provider
from forge_dagster.core.providers.wire import encoded_size


class BatchLimitError(ValueError):
    """A batch the provider would refuse. `limit` names the violated rule: `max_requests`, `max_bytes`,
    `custom_id_format`, `custom_id_unique`, `empty`, `one_model`, `one_endpoint` or `embedding_inputs`."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{limit}: {message}")
        self.limit = limit


def check_limits(batch: BatchSpec) -> None:
    """Raise `BatchLimitError` if `batch` breaks its provider's request-count, byte or custom_id rules, mixes
    models or endpoints (an OpenAI batch file takes one model, and one endpoint per batch), or holds more
    embedding inputs than OpenAI takes in one batch."""
    limits = LIMITS[batch.provider]
    count = len(batch.requests)
    if count == 0:
        raise BatchLimitError("empty", f"batch {batch.forge_batch_id} has no requests")
    if count > limits.max_requests:
        raise BatchLimitError(
            "max_requests",
            f"batch {batch.forge_batch_id} has {count} requests; {batch.provider} allows {limits.max_requests}",
        )
    seen: set[str] = set()
    total_bytes = 0
    for request in batch.requests:
        if not CUSTOM_ID_RE.match(request.custom_id):
            raise BatchLimitError(
                "custom_id_format",
                f"custom_id {request.custom_id[:80]!r} does not match {CUSTOM_ID_RE.pattern}",
            )
        if request.custom_id in seen:
            raise BatchLimitError("custom_id_unique", f"custom_id {request.custom_id!r} appears twice")
        seen.add(request.custom_id)
        total_bytes += encoded_size(batch.provider, request)
        if total_bytes > limits.max_bytes:
            raise BatchLimitError(
                "max_bytes",
                f"batch {batch.forge_batch_id} exceeds {limits.max_bytes} bytes for {batch.provider}",
            )
    _check_uniform(batch)

def _embedding_inputs(body: dict) -> int:
    value = body.get("input")
    return len(value) if isinstance(value, list) else 1


def _check_uniform(batch: BatchSpec) -> None:
    endpoint = batch.endpoint
    inputs = 0
    for request in batch.requests:
        if request.endpoint != endpoint:
            raise BatchLimitError("one_endpoint", f"batch {batch.forge_batch_id} mixes endpoints {endpoint} and "
                                  f"{request.endpoint} ({request.custom_id})")
        model = request.body.get("model")
        if batch.provider == Provider.OPENAI and model != batch.model:
            raise BatchLimitError("one_model", f"batch {batch.forge_batch_id} is for model {batch.model}, but "
                                  f"{request.custom_id} asks for {model!r}: an OpenAI batch file takes one model")
        if endpoint == "embeddings":
            inputs += _embedding_inputs(request.body)
    if inputs > EMBEDDING_BATCH_INPUTS:
        raise BatchLimitError("embedding_inputs", f"batch {batch.forge_batch_id} has {inputs} embedding inputs; "
                              f"openai allows {EMBEDDING_BATCH_INPUTS} per batch")
