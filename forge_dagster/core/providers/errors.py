"""Classify provider failures (SDK exceptions and error objects inside batch results) into `ProviderError`.

One rule set for both providers (DESIGN.md section 5):
- 429 with code `insufficient_quota` -> QUOTA_EXHAUSTED; any other 429 -> RATE_LIMITED with `retry_after_s`
  from the `retry-after-ms` or `retry-after` header;
- "credit balance is too low", HTTP 402 or Anthropic `billing_error` -> QUOTA_EXHAUSTED;
- 401 / 403 -> AUTH;
- 408, 409, 5xx, 529 overloaded -> TRANSIENT; timeouts and connection errors -> TRANSIENT, ambiguous;
- any other 4xx -> INVALID_REQUEST.
Messages keep the provider's raw text with every registered secret scrubbed out.
"""

from __future__ import annotations

import email.utils
import sys
import time
from collections.abc import Mapping
from typing import Any

from forge_dagster.core.models import ErrorClass, ProviderError
from forge_dagster.core.secrets import scrub

_SDKS = ("openai", "anthropic")

QUOTA_CODES = frozenset({"insufficient_quota", "billing_error", "billing_hard_limit_reached"})
CREDIT_TOO_LOW = "credit balance is too low"

# Anthropic error `type` -> the HTTP status it stands for, used when a batch result carries no status.
ANTHROPIC_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# OpenAI error `code` values inside batch lines that carry no HTTP status.
OPENAI_CODE_CLASS = {
    "rate_limit_exceeded": ErrorClass.RATE_LIMITED,
    "insufficient_quota": ErrorClass.QUOTA_EXHAUSTED,
    "server_error": ErrorClass.TRANSIENT,
    "timeout": ErrorClass.TRANSIENT,
    "invalid_api_key": ErrorClass.AUTH,
}


def classify(exc: BaseException) -> ProviderError:
    """The `ProviderError` an SDK exception (OpenAI or Anthropic) stands for."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, _sdk_errors("APITimeoutError")):
        return ProviderError(ErrorClass.TRANSIENT, scrub(f"timeout: {exc}"), ambiguous=True)
    if isinstance(exc, _sdk_errors("APIConnectionError")):
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        return ProviderError(ErrorClass.TRANSIENT, scrub(f"connection error: {exc}{cause}"), ambiguous=True)
    if isinstance(exc, _sdk_errors("APIStatusError")):
        headers = exc.response.headers if exc.response is not None else {}
        return classify_status(exc.status_code, exc.body, headers=headers, message=str(exc))
    if isinstance(exc, _sdk_errors("APIResponseValidationError")):
        # The provider answered with something we cannot read: whatever we asked for may have happened.
        return ProviderError(
            ErrorClass.TRANSIENT,
            scrub(f"unreadable response: {exc}"),
            status_code=exc.status_code,
            ambiguous=True,
        )
    return ProviderError(ErrorClass.TRANSIENT, scrub(f"{type(exc).__name__}: {exc}"))


def classify_status(
    status_code: int,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    message: str | None = None,
) -> ProviderError:
    """Classify an HTTP status with its error body (`{"error": {...}}` or the error object itself)."""
    error = _error_object(body)
    codes = {_text(error.get("code")), _text(error.get("type"))}
    raw_message = _text(error.get("message")) or message or (body if isinstance(body, str) else "") or ""
    text = scrub(raw_message or f"HTTP {status_code}")
    retry_after = retry_after_seconds(headers or {})

    def err(error_class: ErrorClass, **kw: Any) -> ProviderError:
        return ProviderError(error_class, text, status_code=status_code, **kw)

    if status_code == 429:
        if codes & QUOTA_CODES:
            return err(ErrorClass.QUOTA_EXHAUSTED)
        return err(ErrorClass.RATE_LIMITED, retry_after_s=retry_after)
    if status_code == 402 or codes & QUOTA_CODES or CREDIT_TOO_LOW in raw_message.lower():
        return err(ErrorClass.QUOTA_EXHAUSTED)
    if status_code in (401, 403):
        return err(ErrorClass.AUTH)
    if status_code in (408, 409) or status_code >= 500:
        return err(ErrorClass.TRANSIENT, retry_after_s=retry_after)
    return err(ErrorClass.INVALID_REQUEST)


def classify_error_object(error: Mapping[str, Any], status_code: int | None = None) -> ProviderError:
    """Classify an error object found inside a batch result line (OpenAI `error`, Anthropic `result.error`)."""
    inner = _error_object(error)
    if status_code is None:
        status_code = ANTHROPIC_ERROR_STATUS.get(_text(inner.get("type")) or "")
    if status_code is not None:
        return classify_status(status_code, inner)
    code = _text(inner.get("code")) or ""
    error_class = OPENAI_CODE_CLASS.get(code, ErrorClass.INVALID_REQUEST)
    message = _text(inner.get("message")) or code or "error without message"
    return ProviderError(error_class, scrub(message))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date), if present."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


def _sdk_errors(name: str) -> tuple[type[BaseException], ...]:
    """The exception class `name` of each SDK already imported (an SDK never imported raised nothing),
    so classifying does not import both SDKs."""
    found = (getattr(sys.modules[sdk], name, None) for sdk in _SDKS if sdk in sys.modules)
    return tuple(cls for cls in found if isinstance(cls, type))


def _error_object(body: Any) -> Mapping[str, Any]:
    """The innermost `error` mapping of a body: `{"error": {...}}`, `{"type": "error", "error": {...}}`
    or the error object itself."""
    current: Any = body if isinstance(body, Mapping) else {}
    while isinstance(current.get("error"), Mapping):
        current = current["error"]
    return current


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
