"""Plain data shared by every layer: job and batch states, provider limits, requests, results, errors.

Nothing here does I/O. The store, the provider ports, shaping and validation all speak these types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


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
    CANCELLED = "cancelled"  # by an operator; terminal, a late result is refused


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.INVALID, JobState.FAILED, JobState.DEAD,
                                 JobState.CANCELLED})
OPEN_JOB_STATES = frozenset({JobState.PENDING, JobState.CLAIMED, JobState.RUNNING, JobState.SUBMITTED,
                             JobState.COLLECTED})
RETRYABLE_JOB_STATES = frozenset({JobState.DEAD, JobState.INVALID, JobState.FAILED, JobState.CANCELLED})
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

JOB_MODES = ("batch", "realtime", "handler")
MAX_PAYLOAD_BYTES = 256 * 1024  # a job's input as JSON (an intake line has the same bound)
MAX_ATTEMPTS_LIMIT = 20
_TEXT_LIMITS = {"processor": 200, "external_id": 200, "processor_version": 200, "callback_url": 2000}
_NUL_ESCAPE_RE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # a JSON \u0000 escape, not an escaped backslash


def callback_url_problem(url: str) -> str | None:
    """Why `url` cannot receive a job's stamp (only http and https with a host can), or None."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        ok = False
    return None if ok else f"callback_url must be an http(s) URL with a host, got {url[:100]!r}"


def settle_mode(routed: str, stated: str | None) -> str:
    """The mode a job runs in: the one its processor routes it to, or the one the job states. A handler
    step's jobs run only in mode handler and an LLM job never does (ValueError says why)."""
    if stated is None or stated == routed:
        return routed
    if "handler" in (routed, stated):
        raise ValueError(f"mode {stated} does not fit a processor that runs in mode {routed}")
    return stated


# The provider API a processor calls (DESIGN.md section 5). `chat` is OpenAI chat.completions, or Anthropic
# messages (`messages` names it too); the others are OpenAI's.
ENDPOINTS = ("chat", "messages", "responses", "embeddings", "moderations")
OPENAI_URLS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "embeddings": "/v1/embeddings",
               "moderations": "/v1/moderations"}
EMBEDDING_BATCH_INPUTS = 50_000  # OpenAI: embedding inputs across all requests of one batch


@dataclass(frozen=True, slots=True)
class AcceptedOutput:
    """An output validation accepted against one registered processor version: the only thing a job may
    succeed with (the store writes it to accepted_outputs, and refuses `succeeded` without it). Built by
    `validation.accepted_output`, never by hand."""

    output: dict[str, Any]
    processor: str
    processor_version: str
    fingerprint: str
    accepted_by: str  # the validating path: batch, realtime, repair, handler module:function
    # An embedding: the vector as little-endian float32 bytes, stored beside the job (output_vectors);
    # `output` then holds its dimensions and sha256, so the job's output digest binds the vector too.
    vector: bytes | None = None


class UnusableCallback(ValueError):
    """A job's callback_url no stamp may go to (not http(s), or refused by the callback policy): the job
    is refused, and its refusal is not stamped there either."""


@dataclass(frozen=True)
class Rejection:
    """A job enqueue refused, and why."""

    index: int  # position in the submitted sequence (the caller maps it to a line number)
    external_id: str | None
    error: str


@dataclass
class EnqueueReport:
    accepted: list[int] = field(default_factory=list)  # job ids, in input order
    rejected: list[Rejection] = field(default_factory=list)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class JobSpec:
    """A job to enqueue. `external_id` makes intake idempotent per source (one is generated if absent).
    No `mode`: the processor decides, as at every intake. `due_at` (timezone-aware) says when the answer
    is needed: an `auto` processor runs work due soon in realtime."""

    processor: str
    payload: dict[str, Any]
    external_id: str | None = None
    processor_version: str | None = None
    mode: str | None = None
    max_attempts: int = 3
    callback_url: str | None = None
    due_at: datetime | None = None

    def encoded_payload(self) -> str:
        """The payload as the JSON text the store writes. Raises ValueError naming everything PostgreSQL
        would refuse in this job (a NUL character, a bad mode, max_attempts out of range, sizes), so one
        bad job is rejected alone instead of failing the whole enqueue."""
        problems = [p for p in self._field_problems() if p]
        text = None
        if not isinstance(self.payload, dict):
            problems.append(f"payload must be a JSON object, got {type(self.payload).__name__}")
        else:
            try:
                text = json.dumps(self.payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                problems.append(f"payload is not JSON: {exc}")
        if text is not None:
            if _NUL_ESCAPE_RE.search(text):
                problems.append("payload contains a NUL character (\\u0000), which PostgreSQL cannot store")
            try:
                size = len(text.encode())
            except UnicodeEncodeError:
                problems.append("payload contains an unpaired surrogate (not valid Unicode)")
            else:
                if size > MAX_PAYLOAD_BYTES:
                    problems.append(f"payload is {size} bytes, over the {MAX_PAYLOAD_BYTES} byte limit")
        if problems:
            raise ValueError("; ".join(problems))
        return text

    def _field_problems(self) -> Iterator[str | None]:
        if self.mode is not None and self.mode not in JOB_MODES:
            yield f"mode must be one of {', '.join(JOB_MODES)}, not {self.mode!r}"
        if type(self.max_attempts) is not int or not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            yield f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}, not {self.max_attempts!r}"
        for name, limit in _TEXT_LIMITS.items():
            value = getattr(self, name)
            if value is None and name != "processor":
                continue
            if not isinstance(value, str) or not 1 <= len(value) <= limit:
                yield f"{name} must be a string of 1 to {limit} characters"
            elif "\x00" in value:
                yield f"{name} contains a NUL character, which PostgreSQL cannot store"
            elif not value.isascii() and not _encodable(value):
                yield f"{name} contains an unpaired surrogate (not valid Unicode)"
        if isinstance(self.callback_url, str):
            yield callback_url_problem(self.callback_url)
        if self.due_at is not None and (not isinstance(self.due_at, datetime) or self.due_at.tzinfo is None):
            yield "due_at must be a timezone-aware datetime"


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
    """Tokens of one request (see pricing.py for the convention: every cache class is part of input)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # read from the prompt cache
    reasoning_tokens: int = 0
    cache_write_5m_tokens: int = 0  # written to Anthropic's prompt cache with a 5-minute TTL
    cache_write_1h_tokens: int = 0  # ... with a 1-hour TTL

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    def to_dict(self) -> dict[str, int]:
        """The usage as stored; the cache-write counts only when there are any (older rows lack them)."""
        out = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }
        if self.cache_write_5m_tokens:
            out["cache_write_5m_tokens"] = self.cache_write_5m_tokens
        if self.cache_write_1h_tokens:
            out["cache_write_1h_tokens"] = self.cache_write_1h_tokens
        return out


@dataclass(frozen=True)
class ProviderRequest:
    """One request in a provider's own body shape: an OpenAI chat.completions body, or Anthropic
    `messages.create` params. `custom_id` ties the result back to the job."""

    custom_id: str
    body: dict[str, Any]
    endpoint: str = "chat"  # one of ENDPOINTS: which API the body is for


@dataclass
class BatchSpec:
    """A shaped batch ready to submit: one provider, one model, within that provider's limits."""

    forge_batch_id: str
    provider: Provider
    model: str
    requests: list[ProviderRequest]
    processor: str | None = None

    @property
    def endpoint(self) -> str:
        """The one endpoint every request of the batch calls (`chat` for an empty batch)."""
        return self.requests[0].endpoint if self.requests else "chat"


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
    tool_input: dict[str, Any] | None = None  # a forced tool call's input, or a moderation result object
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: ProviderError | None = None
    raw: dict[str, Any] | None = None
    # An embedding's vector as little-endian float32 bytes (taken out of `raw`, which says where it went);
    # None for every other endpoint, or when the answer held no list of numbers.
    vector: bytes | None = None


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
