"""Batch lifecycle through both ports: submit, status until ended, results, cancel, expiry, ordering."""

from __future__ import annotations

import json

import pytest

from forge_dagster.core.models import BatchState, Provider, ResultOutcome
from forge_dagster.core.providers import BatchNotEndedError, ProviderPort
from forge_dagster.simulator import Simulator

from .helpers import TEST_KEYS, make_batch, routes, wait_until_ended


def test_batch_lifecycle_returns_one_succeeded_item_per_request(sim: Simulator, port: ProviderPort) -> None:
    batch = make_batch(port.provider, 3)
    submitted = port.submit(batch)
    assert submitted.provider_batch_id and not submitted.reconciled

    status = wait_until_ended(port, submitted.provider_batch_id)
    assert status.state == BatchState.ENDED_COMPLETED
    assert status.counts.total == 3 and status.counts.succeeded == 3 and status.counts.processing == 0

    items = port.results(submitted.provider_batch_id, [r.custom_id for r in batch.requests])
    assert [i.custom_id for i in items] == ["item-0", "item-1", "item-2"]
    for item in items:
        assert item.outcome == ResultOutcome.SUCCEEDED
        assert item.status_code == 200
        assert item.text and item.stop_reason == "stop"
        assert item.usage.input_tokens > 0 and item.usage.output_tokens > 0
        assert item.raw is not None and item.raw["custom_id"] == item.custom_id
    if port.provider == Provider.OPENAI:
        assert submitted.input_file_id
        assert routes(sim)[:2] == ["POST /v1/files", "POST /v1/batches"]
    else:
        assert routes(sim)[0] == "POST /v1/messages/batches"


def test_running_batch_is_in_progress_and_its_results_are_refused(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(batch_processing_s=60)
    batch = make_batch(port.provider, 2)
    submitted = port.submit(batch)
    status = port.status(submitted.provider_batch_id)
    assert status.state == BatchState.IN_PROGRESS and not status.ended
    assert status.counts.total == 2 and status.counts.processing == 2
    # Reading results now would requeue work that is still running: refused, not "all missing".
    with pytest.raises(BatchNotEndedError):
        port.results(submitted.provider_batch_id, [r.custom_id for r in batch.requests])


def test_expired_batch_keeps_finished_results_and_requeues_the_rest(
    sim: Simulator, port: ProviderPort
) -> None:
    sim.configure(expire_batches=True, expire_complete_fraction=0.5)
    batch = make_batch(port.provider, 4)
    submitted = port.submit(batch)

    status = wait_until_ended(port, submitted.provider_batch_id)
    assert status.state == BatchState.ENDED_EXPIRED
    assert status.counts.succeeded == 2 and status.counts.total == 4
    if port.provider == Provider.ANTHROPIC:  # OpenAI's counts cannot tell expired from failed; results can
        assert status.counts.expired == 2

    items = port.results(submitted.provider_batch_id, [r.custom_id for r in batch.requests])
    outcomes = sorted(i.outcome for i in items)
    assert outcomes == [ResultOutcome.REQUEUE] * 2 + [ResultOutcome.SUCCEEDED] * 2
    assert all(i.text for i in items if i.outcome == ResultOutcome.SUCCEEDED)


def test_cancel_with_partial_finish_harvests_finished_and_requeues_rest(
    sim: Simulator, port: ProviderPort
) -> None:
    sim.configure(batch_processing_s=60, cancel_complete_fraction=0.5)
    batch = make_batch(port.provider, 4)
    submitted = port.submit(batch)

    after_cancel = port.cancel(submitted.provider_batch_id)
    assert after_cancel.state in (BatchState.CANCELLING, BatchState.ENDED_CANCELLED)
    status = wait_until_ended(port, submitted.provider_batch_id)
    assert status.state == BatchState.ENDED_CANCELLED
    assert status.counts.succeeded == 2 and status.counts.total == 4
    if port.provider == Provider.ANTHROPIC:
        assert status.counts.canceled == 2

    items = port.results(submitted.provider_batch_id, [r.custom_id for r in batch.requests])
    assert sorted(i.outcome for i in items) == [ResultOutcome.REQUEUE] * 2 + [ResultOutcome.SUCCEEDED] * 2


def test_cancel_after_everything_finished_ends_completed_not_cancelled(
    sim: Simulator, anthropic_port: ProviderPort
) -> None:
    # Anthropic: a cancel that arrives when nothing is left to cancel must not hide finished work.
    sim.configure(batch_processing_s=60, cancel_complete_fraction=1.0)
    submitted = anthropic_port.submit(make_batch(Provider.ANTHROPIC, 3))
    anthropic_port.cancel(submitted.provider_batch_id)
    status = wait_until_ended(anthropic_port, submitted.provider_batch_id)
    assert status.state == BatchState.ENDED_COMPLETED
    assert status.counts.succeeded == 3 and status.counts.canceled == 0


def test_out_of_order_results_are_matched_by_custom_id(sim: Simulator, port: ProviderPort) -> None:
    sim.configure(out_of_order=True)
    batch = make_batch(port.provider, 6)
    submitted = port.submit(batch)
    wait_until_ended(port, submitted.provider_batch_id)

    expected = [r.custom_id for r in batch.requests]
    items = port.results(submitted.provider_batch_id, expected)
    assert [i.custom_id for i in items] == expected
    # Prompt i is longer than prompt i-1: correct matching shows as strictly increasing input tokens.
    tokens = [i.usage.input_tokens for i in items]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    # ...even though the provider's own line order differs from the submission order.
    assert _provider_line_order(sim, port, submitted.provider_batch_id) != expected


def test_results_ignore_unexpected_ids_and_requeue_missing_ones(sim: Simulator, port: ProviderPort) -> None:
    batch = make_batch(port.provider, 3)
    submitted = port.submit(batch)
    wait_until_ended(port, submitted.provider_batch_id)

    items = port.results(submitted.provider_batch_id, ["item-2", "item-0", "never-sent"])
    assert [i.custom_id for i in items] == ["item-2", "item-0", "never-sent"]
    assert [i.outcome for i in items] == [
        ResultOutcome.SUCCEEDED,
        ResultOutcome.SUCCEEDED,
        ResultOutcome.REQUEUE,
    ]


def _provider_line_order(sim: Simulator, port: ProviderPort, provider_batch_id: str) -> list[str]:
    """custom_ids in the order the provider wrote them, read with the plain SDK client."""
    if port.provider == Provider.OPENAI:
        import openai

        client = openai.OpenAI(
            api_key=TEST_KEYS[Provider.OPENAI], base_url=sim.openai_base_url, max_retries=0
        )
        remote = client.batches.retrieve(provider_batch_id)
        text = client.files.content(remote.output_file_id).text
        client.close()
        return [json.loads(line)["custom_id"] for line in text.splitlines() if line.strip()]
    import anthropic

    client = anthropic.Anthropic(
        api_key=TEST_KEYS[Provider.ANTHROPIC], base_url=sim.anthropic_base_url, max_retries=0
    )
    order = [entry.custom_id for entry in client.messages.batches.results(provider_batch_id)]
    client.close()
    return order
