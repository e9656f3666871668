"""Submission is exactly-once: limits are checked first, ambiguous creates and crashes are reconciled."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import anthropic
import openai
import pytest

from forge_dagster.core.models import BatchSpec, ErrorClass, Provider, ProviderError, ProviderRequest
from forge_dagster.core.providers import BatchLimitError, ProviderPort, check_limits
from forge_dagster.simulator import Simulator
from tests.helpers import wait_until

from .helpers import OPENAI_TEST_KEY, TEST_KEYS, base_url, make_batch, make_port, routes

ROOT = Path(__file__).resolve().parents[2]


def _provider_batches(sim: Simulator, provider: Provider, forge_batch_id: str | None = None) -> list[str]:
    """Provider batch ids as the provider lists them (OpenAI: those carrying `forge_batch_id`)."""
    if provider == Provider.OPENAI:
        client = openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url=sim.openai_base_url, max_retries=0)
        found = [
            b.id
            for b in client.batches.list(limit=100)
            if forge_batch_id is None or (b.metadata or {}).get("forge_batch_id") == forge_batch_id
        ]
    else:
        client = anthropic.Anthropic(
            api_key=TEST_KEYS[provider], base_url=sim.anthropic_base_url, max_retries=0
        )
        found = [b.id for b in client.messages.batches.list(limit=100)]
    client.close()
    return found


def _creates(sim: Simulator) -> int:
    return sum(1 for r in routes(sim) if r in ("POST /v1/batches", "POST /v1/messages/batches"))


# -- limits ------------------------------------------------------------------------------------------
def _tiny(provider: Provider, n: int) -> BatchSpec:
    requests = [ProviderRequest(f"r{i}", {"model": "m", "messages": []}) for i in range(n)]
    return BatchSpec("limits", provider, "m", requests)


def test_more_than_50000_openai_requests_is_refused_before_any_call(
    sim: Simulator, openai_port: ProviderPort
) -> None:
    with pytest.raises(BatchLimitError) as caught:
        openai_port.submit(_tiny(Provider.OPENAI, 50_001))
    assert caught.value.limit == "max_requests"
    assert sim.requests() == []
    check_limits(_tiny(Provider.OPENAI, 50_000))  # the limit itself is allowed


def test_batch_over_the_byte_limit_is_refused(sim: Simulator, openai_port: ProviderPort) -> None:
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * (101 * 1024 * 1024)}]}
    requests = [ProviderRequest("a", big), ProviderRequest("b", big)]  # each fits, together > 200 MB
    with pytest.raises(BatchLimitError) as caught:
        openai_port.submit(BatchSpec("big", Provider.OPENAI, "m", requests))
    assert caught.value.limit == "max_bytes"
    assert sim.requests() == []


@pytest.mark.parametrize("custom_id", ["has space", "x" * 65, "", "dot.ted", "ünï"])
def test_custom_id_outside_the_pattern_is_refused(custom_id: str) -> None:
    batch = BatchSpec("ids", Provider.ANTHROPIC, "m", [ProviderRequest(custom_id, {"model": "m"})])
    with pytest.raises(BatchLimitError) as caught:
        check_limits(batch)
    assert caught.value.limit == "custom_id_format"


def test_duplicate_custom_id_is_refused() -> None:
    batch = BatchSpec("dup", Provider.OPENAI, "m", [ProviderRequest("same", {}), ProviderRequest("same", {})])
    with pytest.raises(BatchLimitError) as caught:
        check_limits(batch)
    assert caught.value.limit == "custom_id_unique"


# -- exactly once ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["503", "drop"])
def test_ambiguous_create_leaves_one_batch_and_submit_returns_it(
    sim: Simulator, port: ProviderPort, mode: str
) -> None:
    sim.configure(ambiguous_create=1.0, ambiguous_create_mode=mode)
    batch = make_batch(port.provider, 3)
    submitted = port.submit(batch)
    assert submitted.reconciled
    assert _provider_batches(sim, port.provider, batch.forge_batch_id) == [submitted.provider_batch_id]
    assert _creates(sim) == 1


def test_resume_after_a_completed_submit_returns_the_same_batch(sim: Simulator, port: ProviderPort) -> None:
    batch = make_batch(port.provider, 2)
    first = port.submit(batch)
    again = port.submit(batch, resume=True)
    assert again.provider_batch_id == first.provider_batch_id and again.reconciled
    assert _creates(sim) == 1


def test_resume_when_nothing_reached_the_provider_creates_once(sim: Simulator, port: ProviderPort) -> None:
    batch = make_batch(port.provider, 2)
    submitted = port.submit(batch, resume=True)
    assert not submitted.reconciled
    assert _provider_batches(sim, port.provider, batch.forge_batch_id) == [submitted.provider_batch_id]


def test_failed_upload_is_transient_and_not_ambiguous(sim: Simulator, openai_port: ProviderPort) -> None:
    sim.configure(error_5xx_rate=1.0)
    with pytest.raises(ProviderError) as caught:
        openai_port.submit(make_batch(Provider.OPENAI, 2))
    assert caught.value.error_class == ErrorClass.TRANSIENT and not caught.value.ambiguous
    assert routes(sim) == ["POST /v1/files"]


def test_create_5xx_unresolved_is_ambiguous_and_a_resume_creates_once(
    sim: Simulator, anthropic_port: ProviderPort
) -> None:
    sim.configure(error_5xx_rate=1.0)  # the create and every lookup fail
    batch = make_batch(Provider.ANTHROPIC, 2)
    with pytest.raises(ProviderError) as caught:
        anthropic_port.submit(batch)
    assert caught.value.error_class == ErrorClass.TRANSIENT and caught.value.ambiguous
    assert "GET /v1/messages/batches" in routes(sim)  # it looked before giving up

    sim.configure(error_5xx_rate=0.0)
    resumed = anthropic_port.submit(batch, resume=True)
    assert _provider_batches(sim, Provider.ANTHROPIC) == [resumed.provider_batch_id]


_CRASHING_SUBMITTER = """
import json, logging, os, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(message)s")
from forge_dagster.core.models import BatchSpec, Provider, ProviderRequest
from forge_dagster.core.providers import ProviderCredentials, build_port
spec = json.loads(sys.stdin.read())
port = build_port("openai", ProviderCredentials(os.environ["FORGE_TEST_OPENAI_KEY"], spec["base_url"], timeout_s=30))
requests = [ProviderRequest(r["custom_id"], r["body"]) for r in spec["requests"]]
port.submit(BatchSpec(spec["forge_batch_id"], Provider.OPENAI, "gpt-4o-mini", requests))
print("submit returned", flush=True)
"""


def test_crash_between_upload_and_create_is_resumed_without_a_duplicate(
    sim: Simulator, openai_port: ProviderPort
) -> None:
    sim.configure(route_latency_ms={"POST /v1/batches": 2000})
    batch = make_batch(Provider.OPENAI, 3)
    spec = {
        "base_url": base_url(sim, Provider.OPENAI),
        "forge_batch_id": batch.forge_batch_id,
        "requests": [{"custom_id": r.custom_id, "body": r.body} for r in batch.requests],
    }
    env = {**os.environ, "FORGE_TEST_OPENAI_KEY": OPENAI_TEST_KEY, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_SUBMITTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr_seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stderr], daemon=True).start()
    try:
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()

        # The create request has been written to the socket: its log line, then the body sent.
        creating = False

        def create_in_flight() -> bool:
            nonlocal creating
            while not lines.empty():
                line = lines.get()
                stderr_seen.append(line)
                creating = creating or "creating OpenAI batch" in line
                if creating and "send_request_body.complete" in line:
                    return True
            assert proc.poll() is None, "".join(stderr_seen)
            return False

        wait_until(create_in_flight, timeout_s=20, what="the create call to be in flight")
        assert routes(sim) == ["POST /v1/files"]  # uploaded; the create is still held by the provider
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -9
    assert "submit returned" not in proc.stdout.read()

    # The orphaned create still takes effect at the provider (it was in flight when we died).
    wait_until(lambda: _creates(sim) == 1, what="the orphaned create to land")
    resumed = openai_port.submit(batch, resume=True)
    assert resumed.reconciled
    assert _provider_batches(sim, Provider.OPENAI, batch.forge_batch_id) == [resumed.provider_batch_id]
    assert _creates(sim) == 1 and routes(sim).count("POST /v1/files") == 1
    assert OPENAI_TEST_KEY not in "".join(stderr_seen)  # not even at DEBUG level


def test_anthropic_lookup_needs_matching_count_and_custom_ids(
    sim: Simulator, anthropic_port: ProviderPort
) -> None:
    ours = make_batch(Provider.ANTHROPIC, 3)
    submitted = anthropic_port.submit(ours)
    anthropic_port.status(submitted.provider_batch_id)  # ends it (no processing time configured)

    same_size_other_ids = BatchSpec(
        "other",
        Provider.ANTHROPIC,
        "m",
        [ProviderRequest(f"other-{i}", r.body) for i, r in enumerate(ours.requests)],
    )
    assert anthropic_port.find_submitted(same_size_other_ids, since=0) is None
    assert anthropic_port.find_submitted(make_batch(Provider.ANTHROPIC, 2), since=0) is None
    found = anthropic_port.find_submitted(ours, since=0)
    assert found is not None and found.provider_batch_id == submitted.provider_batch_id and found.reconciled


def test_anthropic_lookup_never_returns_a_batch_of_another_forge_batch(
    sim: Simulator, anthropic_port: ProviderPort
) -> None:
    """Size-capped batches going out together all have the same count; while they run, shape alone
    cannot tell them apart, so the lookup must skip the ones known to belong to other Forge batches."""
    sim.configure(batch_processing_s=1000)
    other = make_batch(Provider.ANTHROPIC, 3)
    other_id = anthropic_port.submit(other).provider_batch_id  # this port created it, for `other`
    ours = make_batch(Provider.ANTHROPIC, 3)
    elsewhere = make_port(sim, Provider.ANTHROPIC)  # ours went out from another process
    ours_id = elsewhere.submit(ours).provider_batch_id
    elsewhere.close()

    found = anthropic_port.find_submitted(ours, since=0)
    assert found is not None and found.provider_batch_id == ours_id

    told_by_caller = make_port(sim, Provider.ANTHROPIC)  # knows neither batch: the caller passes what it knows
    assert told_by_caller.find_submitted(ours, since=0, exclude={other_id}).provider_batch_id == ours_id
    told_by_caller.close()
    told_by_store = make_port(sim, Provider.ANTHROPIC)
    told_by_store.mark_taken([other_id])
    assert told_by_store.find_submitted(ours, since=0).provider_batch_id == ours_id
    told_by_store.mark_taken([ours_id])  # every same-sized batch is somebody else's: none is ours
    assert told_by_store.find_submitted(ours, since=0) is None
    told_by_store.close()
