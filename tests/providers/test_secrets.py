"""API keys never leak: not in logs, printed output, exception messages, reprs or the provider's request log."""

from __future__ import annotations

import io
import json
import logging
import pickle

import pytest

from forge_dagster.core.models import ErrorClass, Provider, ProviderError, ProviderRequest
from forge_dagster.core.providers import ProviderCredentials, ProviderRegistry, classify_status
from forge_dagster.core.secrets import SecretRedactingFilter, install_redaction, mask_secret, register_secret
from forge_dagster.simulator import Simulator

from .helpers import (
    ANTHROPIC_TEST_KEY,
    OPENAI_TEST_KEY,
    make_batch,
    make_port,
    request_body,
    wait_until_ended,
)

KEYS = (OPENAI_TEST_KEY, ANTHROPIC_TEST_KEY)


def test_keys_never_appear_in_logs_output_errors_or_request_log(
    sim: Simulator, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, SDK and HTTP internals included
    messages: list[str] = []
    for provider in (Provider.OPENAI, Provider.ANTHROPIC):
        port = make_port(sim, provider)
        print(port, port.credentials)
        batch = make_batch(provider, 2)
        submitted = port.submit(batch)
        wait_until_ended(port, submitted.provider_batch_id)
        port.results(submitted.provider_batch_id, [r.custom_id for r in batch.requests])
        for knobs in ({"rpm_limit": 1}, {"error_5xx_rate": 1.0}, {"quota_tokens": 1}):
            sim.configure(**knobs)
            for _ in range(2):
                try:
                    port.complete(ProviderRequest("x", request_body(provider, "hello")))
                except ProviderError as exc:
                    messages += [str(exc), repr(exc), exc.message]
            sim.configure(rpm_limit=None, error_5xx_rate=0.0, quota_tokens=None)
            sim.refill_quota()
        port.close()

    assert len(messages) >= 6  # the faults really produced errors to inspect
    out, err = capsys.readouterr()
    texts = [caplog.text, out, err, json.dumps(sim.requests()), *messages]
    for key in KEYS:
        assert all(key not in text for text in texts)
    assert any(record.name.startswith(("openai", "anthropic", "httpcore")) for record in caplog.records)


def test_error_message_echoing_a_key_is_scrubbed() -> None:
    register_secret(OPENAI_TEST_KEY)
    error = classify_status(401, {"error": {"message": f"Incorrect API key provided: {OPENAI_TEST_KEY}."}})
    assert error.error_class == ErrorClass.AUTH
    assert OPENAI_TEST_KEY not in error.message and OPENAI_TEST_KEY not in str(error)
    assert mask_secret(OPENAI_TEST_KEY) in error.message


def test_redaction_filter_masks_registered_secrets_in_records() -> None:
    secret = "sk-filtertest-0123456789abcdefXYZ9"
    register_secret(secret)
    stream = io.StringIO()
    logger = logging.getLogger("forge_test_redaction")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        install_redaction(logger)
        install_redaction(logger)  # idempotent
        assert sum(isinstance(f, SecretRedactingFilter) for f in handler.filters) == 1
        logger.warning("calling with key=%s", secret)
        try:
            raise RuntimeError(f"bad key {secret}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert secret not in text
    assert "key=sk-…XYZ9" in text and "bad key sk-…XYZ9" in text


def test_mask_secret_shows_at_most_the_last_four_characters() -> None:
    assert mask_secret("sk-proj-abcdefghijklmnopa1b2") == "sk-proj-…a1b2"
    assert mask_secret("sk-ant-api03-abcdefghijkl9z8y") == "sk-ant-…9z8y"
    assert mask_secret("short-key") == "…"
    assert mask_secret("") == "<unset>"


def test_credentials_hold_the_key_privately(sim: Simulator) -> None:
    credentials = ProviderCredentials(OPENAI_TEST_KEY, sim.openai_base_url)
    assert OPENAI_TEST_KEY not in repr(credentials) and OPENAI_TEST_KEY not in str(credentials)
    assert credentials.masked_key.endswith(OPENAI_TEST_KEY[-4:])
    assert not hasattr(credentials, "__dict__") and not hasattr(credentials, "api_key")
    with pytest.raises(TypeError):
        pickle.dumps(credentials)


def test_registry_from_env_builds_ports_only_for_configured_keys(sim: Simulator) -> None:
    registry = ProviderRegistry.from_env(
        {"OPENAI_API_KEY": OPENAI_TEST_KEY, "OPENAI_BASE_URL": sim.openai_base_url}
    )
    try:
        assert list(registry) == [Provider.OPENAI] and Provider.ANTHROPIC not in registry
        assert registry["openai"].credentials.base_url == sim.openai_base_url
        assert OPENAI_TEST_KEY not in repr(registry)
        assert (
            registry[Provider.OPENAI].complete(ProviderRequest("x", request_body(Provider.OPENAI, "hi"))).text
        )
        with pytest.raises(KeyError):
            registry[Provider.ANTHROPIC]
    finally:
        registry.close()
