"""Classification rules on provider error bodies and headers, and timeouts on the real clients."""

from __future__ import annotations

import email.utils
import time

import pytest

from forge_dagster.core.models import ErrorClass, ProviderError, ProviderRequest
from forge_dagster.core.providers import ProviderCredentials, ProviderPort, build_port
from forge_dagster.core.providers.errors import classify_error_object, classify_status, retry_after_seconds
from forge_dagster.simulator import Simulator

from .helpers import TEST_KEYS, base_url, request_body


def test_timeout_is_transient_and_ambiguous(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(latency_ms=1500)
    impatient = build_port(
        port.provider,
        ProviderCredentials(TEST_KEYS[port.provider], base_url(sim, port.provider), timeout_s=0.3),
    )
    try:
        with pytest.raises(ProviderError) as caught:
            impatient.complete(ProviderRequest("t", request_body(port.provider, "slow?")))
    finally:
        impatient.close()
    assert caught.value.error_class == ErrorClass.TRANSIENT and caught.value.ambiguous


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            429,
            {"error": {"code": "insufficient_quota", "type": "insufficient_quota", "message": "quota"}},
            ErrorClass.QUOTA_EXHAUSTED,
        ),
        (429, {"error": {"code": "rate_limit_exceeded", "message": "slow down"}}, ErrorClass.RATE_LIMITED),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "Your credit balance is too low to access the API.",
                },
            },
            ErrorClass.QUOTA_EXHAUSTED,
        ),
        (401, {"error": {"message": "bad key"}}, ErrorClass.AUTH),
        (403, {"error": {"message": "forbidden"}}, ErrorClass.AUTH),
        (500, {"error": {"message": "oops"}}, ErrorClass.TRANSIENT),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ErrorClass.TRANSIENT,
        ),
        (404, {"error": {"message": "no such model"}}, ErrorClass.INVALID_REQUEST),
        (422, "not json at all", ErrorClass.INVALID_REQUEST),
    ],
)
def test_http_status_and_body_classify(status: int, body: object, expected: ErrorClass) -> None:
    error = classify_status(status, body)
    assert error.error_class == expected and error.status_code == status and error.message


def test_rate_limit_retry_after_prefers_milliseconds_then_seconds_then_date() -> None:
    assert (
        classify_status(429, {}, headers={"retry-after-ms": "1500", "retry-after": "9"}).retry_after_s == 1.5
    )
    assert classify_status(429, {}, headers={"Retry-After": "7"}).retry_after_s == 7.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 50 <= (retry_after_seconds({"retry-after": in_a_minute}) or 0) <= 61
    assert classify_status(429, {}).retry_after_s is None


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ErrorClass.TRANSIENT,
            529,
        ),
        (
            {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
            ErrorClass.INVALID_REQUEST,
            400,
        ),
        (
            {"type": "error", "error": {"type": "rate_limit_error", "message": "later"}},
            ErrorClass.RATE_LIMITED,
            429,
        ),
        ({"code": "server_error", "message": "boom"}, ErrorClass.TRANSIENT, None),
        ({"code": "invalid_prompt", "message": "no"}, ErrorClass.INVALID_REQUEST, None),
    ],
)
def test_error_objects_inside_result_lines_classify(
    error: dict, expected: ErrorClass, status: int | None
) -> None:
    classified = classify_error_object(error)
    assert classified.error_class == expected and classified.status_code == status
