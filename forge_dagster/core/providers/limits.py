"""The provider's batch limits, checked before anything is uploaded (DESIGN.md section 5)."""

from __future__ import annotations

from forge_dagster.core.models import CUSTOM_ID_RE, LIMITS, BatchSpec
from forge_dagster.core.providers.wire import encoded_size


class BatchLimitError(ValueError):
    """A batch the provider would refuse. `limit` names the violated rule: `max_requests`, `max_bytes`,
    `custom_id_format`, `custom_id_unique` or `empty`."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{limit}: {message}")
        self.limit = limit


def check_limits(batch: BatchSpec) -> None:
    """Raise `BatchLimitError` if `batch` breaks its provider's request-count, byte or custom_id rules."""
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
