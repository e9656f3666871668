"""Resuming submissions a crash left half done: one provider batch per Forge batch, whoever resumes it."""

from __future__ import annotations

import threading

from forge_dagster.core.batch.building import BuildReport, resume_stale_submissions
from forge_dagster.core.batch.shaping import custom_id_for
from forge_dagster.core.models import Provider
from forge_dagster.core.providers import build_port
from forge_dagster.core.store import ForgeStore
from tests.pipeline.conftest import review, ticket
from tests.pipeline.test_engine import enqueue
from tests.providers.helpers import routes

MODELS = {"ticket_triage": ("openai", "gpt-4o-mini"), "review_sentiment": ("anthropic", "claude-3-5-haiku-latest")}


def abandoned_intent(store: ForgeStore, lines: list[dict]) -> tuple[int, str]:
    """A submission intent committed by a builder that then died before its provider call finished:
    the batch in `submitting`, its jobs `submitted`, and (as after a crash) untouched for an hour."""
    enqueue(store, lines)
    jobs = store.jobs.claim(len(lines), mode="batch", to_state="claimed", ttl_s=300)
    provider, model = MODELS[lines[0]["processor"]]
    batch_id, forge_batch_id, held = store.batches.record_intent(
        provider=provider, model=model, processor=lines[0]["processor"], version="1.0.0",
        members=[(job, custom_id_for(job.id, job.attempt)) for job in jobs], bytes_=1000)
    assert len(held) == len(lines)
    with store.transaction() as conn:
        conn.execute("UPDATE batches SET updated_at = now() - interval '1 hour' WHERE id = %s", (batch_id,))
    return batch_id, forge_batch_id


def batch_creates(sim) -> int:
    return sum(1 for r in routes(sim) if r in ("POST /v1/batches", "POST /v1/messages/batches"))


def test_two_overlapping_resumes_create_one_provider_batch(store, catalog, ports, sim):
    batch_id, _ = abandoned_intent(store, [ticket(i) for i in range(3)])
    # The create is slow, so two resumers that both went for the batch would both be creating at once.
    sim.configure(route_latency_ms={"POST /v1/batches": 300})
    reports = [BuildReport(), BuildReport()]
    start = threading.Barrier(2)

    def resume(report: BuildReport) -> None:
        start.wait()
        resume_stale_submissions(store, catalog, ports, report)

    threads = [threading.Thread(target=resume, args=(r,)) for r in reports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(r.resumed for r in reports) == [0, 1]
    assert batch_creates(sim) == 1
    batch = store.batches.get(batch_id)
    assert batch["state"] == "in_progress" and batch["submit_attempts"] == 2
    assert store.jobs.counts() == {"submitted": 3}


def test_resumed_submission_is_never_matched_to_another_forge_batch(store, catalog, ports, sim):
    """Anthropic batches are found by shape: a same-sized batch another Forge batch already owns
    (submitted by the process that crashed) must not be taken for the one being resumed."""
    sim.configure(batch_processing_s=1000)  # both stay in progress: no results to tell them apart
    first_id, _ = abandoned_intent(store, [review(i) for i in range(2)])
    crashed_process_port = build_port(Provider.ANTHROPIC, ports[Provider.ANTHROPIC].credentials)
    report = BuildReport()
    resume_stale_submissions(store, catalog, {Provider.ANTHROPIC: crashed_process_port}, report)
    crashed_process_port.close()
    first = store.batches.get(first_id)
    assert report.resumed == 1 and first["state"] == "in_progress"

    second_id, _ = abandoned_intent(store, [review(i) for i in range(2, 4)])
    report = BuildReport()
    resume_stale_submissions(store, catalog, ports, report)
    second = store.batches.get(second_id)
    assert report.resumed == 1 and report.errors == []
    assert second["state"] == "in_progress"
    assert second["provider_batch_id"] != first["provider_batch_id"]
    assert batch_creates(sim) == 2


def test_a_submission_under_way_is_not_resumed(store, catalog, ports, sim):
    batch_id, _ = abandoned_intent(store, [ticket(1)])
    with store.transaction() as conn:  # the builder that wrote it is still within its submission
        conn.execute("UPDATE batches SET updated_at = now() - interval '1 minute' WHERE id = %s", (batch_id,))
    report = BuildReport()
    resume_stale_submissions(store, catalog, ports, report)
    assert report.resumed == 0 and batch_creates(sim) == 0
    assert store.batches.get(batch_id)["state"] == "submitting"
