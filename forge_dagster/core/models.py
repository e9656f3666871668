"""Plain data shared by every layer: job and batch states, provider limits, requests, results, errors.

Nothing here does I/O. The store, the provider ports, shaping and validation all speak these types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Provider(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class JobState(StrEnum):
    """Job lifecycle (DESIGN.md section 3). Batch: pending -> claimed -> submitted -> collected -> end.
    Realtime: pending -> running -> end. Retryable outcomes go back to pending with attempt + 1."""

    PENDING = "pending"
    CLAIMED = "claimed"
    RUNNING = "running"
    SUBMITTED = "submitted"
    COLLECTED = "collected"
    SUCCEEDED = "succeeded"
    INVALID = "invalid"
    FAILED = "failed"
    DEAD = "dead"


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.INVALID, JobState.FAILED, JobState.DEAD})
LEASED_JOB_STATES = frozenset({JobState.CLAIMED, JobState.RUNNING})


class BatchState(StrEnum):
    """Forge's batch lifecycle; `ended_*` keep the provider's ending distinct, never collapsed."""

    BUILDING = "building"
    SUBMITTING = "submitting"
    IN_PROGRESS = "in_progress"
    CANCELLING = "cancelling"
    ENDED_COMPLETED = "ended_completed"
    ENDED_EXPIRED = "ended_expired"
    ENDED_CANCELLED = "ended_cancelled"
    ENDED_FAILED = "ended_failed"
    COLLECTED = "collected"
    ARCHIVED = "archived"


ENDED_BATCH_STATES = frozenset(
    {BatchState.ENDED_COMPLETED, BatchState.ENDED_EXPIRED, BatchState.ENDED_CANCELLED, BatchState.ENDED_FAILED}
)


@dataclass(frozen=True)
class ProviderLimits:
    max_requests: int
    max_bytes: int


LIMITS: dict[Provider, ProviderLimits] = {
    Provider.OPENAI: ProviderLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024),
    Provider.ANTHROPIC: ProviderLimits(max_requests=100_000, max_bytes=256 * 1024 * 1024),
}

CUSTOM_ID_RE = re.compile(r"\A[a-zA-Z0-9_-]{1,64}\Z")  # \Z: a trailing newline does not match


class ErrorClass(StrEnum):
    """What a provider failure means for the caller."""

    RATE_LIMITED = "rate_limited"  # wait retry_after_s, then retry
    QUOTA_EXHAUSTED = "quota_exhausted"  # pause the key, probe back without spending
    TRANSIENT = "transient"  # 5xx, 529 overloaded, timeouts, connection errors: retry with backoff
    INVALID_REQUEST = "invalid_request"  # fail the item
    AUTH = "auth"  # stop and tell the operator


RETRYABLE_ERRORS = frozenset({ErrorClass.RATE_LIMITED, ErrorClass.TRANSIENT})


class ProviderError(Exception):
    """A classified provider failure. `message` is the provider's raw text, kept for the operator."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(f"{error_class}: {message}")
        self.error_class = error_class
        self.message = message
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        # True when the request may have taken effect at the provider (timeout, dropped connection).
        self.ambiguous = ambiguous

    @property
    def retryable(self) -> bool:
        return self.error_class in RETRYABLE_ERRORS


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


@dataclass(frozen=True)
class ProviderRequest:
    """One request in a provider's own body shape: an OpenAI chat.completions body, or Anthropic
    `messages.create` params. `custom_id` ties the result back to the job."""

    custom_id: str
    body: dict[str, Any]


@dataclass
class BatchSpec:
    """A shaped batch ready to submit: one provider, one model, within that provider's limits."""

    forge_batch_id: str
    provider: Provider
    model: str
    requests: list[ProviderRequest]
    processor: str | None = None


@dataclass(frozen=True)
class SubmittedBatch:
    provider_batch_id: str
    input_file_id: str | None = None
    reconciled: bool = False  # found at the provider after an ambiguous outcome, not created now


class ResultOutcome(StrEnum):
    SUCCEEDED = "succeeded"  # the provider answered 200; validation still decides acceptance
    ERRORED = "errored"  # the provider answered with an error for this request
    REQUEUE = "requeue"  # expired, cancelled or missing: never ran to completion, try again


@dataclass
class ResultItem:
    """One provider result, normalised across providers. `stop_reason` is normalised to
    `stop`, `length` (truncated), `refusal`, `tool_use`, or None."""

    custom_id: str
    outcome: ResultOutcome
    status_code: int | None = None
    text: str | None = None
    tool_input: dict[str, Any] | None = None
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: ProviderError | None = None
    raw: dict[str, Any] | None = None


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0


@dataclass(frozen=True)
class BatchStatus:
    """A provider batch's status in Forge's terms."""

    provider_batch_id: str
    state: BatchState  # IN_PROGRESS, CANCELLING or one of ENDED_BATCH_STATES
    counts: RequestCounts
    raw_status: str

    @property
    def ended(self) -> bool:
        return self.state in ENDED_BATCH_STATES
