"""Provider keys from the environment (never stored in clear), the `auto` mode rule at intake, and the
rate-limit headers of both providers. (Batch submission holds: tests/pipeline/test_batch_quota.py.)"""

from __future__ import annotations

import json

from forge_dagster.core.intake.routing import processor_check
from forge_dagster.core.models import Provider
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.providers.keyring import SIMULATOR_ALIAS, KeyRing
from forge_dagster.core.providers.ratelimit import parse_limit_headers
from forge_dagster.core.realtime import keys_from_env

from .conftest import TICKET

OPENAI_1 = "sk-proj-forgetest-ONE-aaaaaaaaaaaaaaaa1111"
OPENAI_2 = "sk-proj-forgetest-TWO-bbbbbbbbbbbbbbbb2222"
ANTHROPIC_1 = "sk-ant-api03-forgetest-CCCCCCCCCCCC3333"
EXTRA = "sk-proj-forgetest-EXTRA-dddddddddddd4444"


def test_keys_come_from_the_environment_and_the_store_sees_only_masked_forms(store):
    env = {
        "OPENAI_API_KEY": OPENAI_1, "OPENAI_API_KEY_2": OPENAI_2, "OPENAI_RPM": "500", "OPENAI_TPM_2": "9000",
        "ANTHROPIC_API_KEY": ANTHROPIC_1, "TEAM_KEY": EXTRA,
        "FORGE_PROVIDER_KEYS": json.dumps([{"provider": "openai", "alias": "team", "env": "TEAM_KEY", "rpm": 60}]),
    }
    keys = {(str(k.provider), k.alias): k for k in keys_from_env(env)}
    assert set(keys) == {("openai", "primary"), ("openai", "2"), ("openai", "team"), ("anthropic", "primary")}
    assert (keys["openai", "primary"].rpm, keys["openai", "2"].rpm, keys["openai", "2"].tpm) == (500, 500, 9000)
    assert keys["openai", "team"].rpm == 60

    ring = KeyRing(list(keys.values()))
    store.keys.register(ring.records())
    with store.transaction() as conn:
        dumped = json.dumps(conn.execute("SELECT json_agg(k) FROM provider_keys k").fetchone()[0])
    for secret in (OPENAI_1, OPENAI_2, ANTHROPIC_1, EXTRA):
        assert secret not in dumped and secret[-12:] not in dumped
    assert {k["masked"] for k in store.keys.all()} == {"sk-proj-…1111", "sk-proj-…2222", "sk-ant-…3333",
                                                      "sk-proj-…4444"}
    assert OPENAI_1 not in repr(ring.keys)


def test_without_any_key_the_simulator_key_is_used():
    keys = keys_from_env({}, simulator_url="http://127.0.0.1:8700")
    assert [(k.provider, k.alias) for k in keys] == [(Provider.OPENAI, SIMULATOR_ALIAS),
                                                      (Provider.ANTHROPIC, SIMULATOR_ALIAS)]
    assert keys[0].credentials.base_url == "http://127.0.0.1:8700/v1"


def test_a_rotated_key_comes_back_active_with_a_clean_pause_history(store):
    [old] = KeyRing(keys_from_env({"OPENAI_API_KEY": OPENAI_1})).records()
    store.keys.register([old])
    assert store.keys.pause("openai", "primary", "quota", base_s=60, cap_s=600).paused
    [rotated] = KeyRing(keys_from_env({"OPENAI_API_KEY": OPENAI_2})).records()
    assert store.keys.register([rotated]) == {("openai", "primary"): "active"}
    store.keys.register([rotated])  # the same key again keeps its state
    assert store.keys.get("openai", "primary")["fingerprint"] == rotated.fingerprint


def test_auto_processors_run_small_requests_realtime_and_large_ones_batch(catalog):
    auto = catalog[TICKET].model_copy(update={"mode": "auto", "version": "9.1.0"})
    check = processor_check(ProcessorCatalog([auto]))
    small = {"subject": "Export broken", "body": "The export button does nothing."}
    large = {"subject": "Logs attached", "body": "stack frame\n" * 2000}
    assert check(TICKET, "9.1.0", small) == ("9.1.0", "realtime")
    assert check(TICKET, "9.1.0", large) == ("9.1.0", "batch")


def test_rate_limit_headers_of_both_providers_are_read():
    openai = parse_limit_headers({"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "30000",
                                  "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m2.5s",
                                  "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "120ms"})
    assert (openai.rpm, openai.tpm, openai.remaining_requests, openai.reset_requests_s) == (500, 30000, 0, 62.5)
    assert abs(openai.reset_tokens_s - 0.12) < 1e-9
    anthropic = parse_limit_headers({"anthropic-ratelimit-requests-limit": "50",
                                     "anthropic-ratelimit-requests-remaining": "3",
                                     "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:10Z",
                                     "anthropic-ratelimit-input-tokens-limit": "40000"},
                                    now=1893456000.0)  # 2030-01-01T00:00:00Z
    assert (anthropic.rpm, anthropic.tpm, anthropic.remaining_requests) == (50, 40000, 3)
    assert anthropic.reset_requests_s == 10.0
