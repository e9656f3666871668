"""The batch builder (the seed called it Anvil): claim pending batch jobs, render each request from its
processor, shape provider-compatible batches, persist the intent, submit.

A job whose request cannot be built (unknown processor, bad input, template error, too large) fails
with its reason; the rest go on. Submission is resumable: a batch left in `submitting` by a crash is
found at the provider (or created) by the next run, never created twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from forge_dagster.core.batch.shaping import RequestTooLarge, custom_id_for, group_key, shape_batches
from forge_dagster.core.models import BatchSpec, ErrorClass, Provider, ProviderError, ProviderRequest
from forge_dagster.core.ops.notify import rejection_messages
from forge_dagster.core.platform.budgets import admit_within_budgets
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.processors import TemplateError, validate_input
from forge_dagster.core.platform.repair import render_job_request, repairs_for
from forge_dagster.core.providers.base import CLOCK_SKEW_S, ProviderPort
from forge_dagster.core.providers.limits import BatchLimitError
from forge_dagster.core.providers.quota import BatchGate, KeyPorts, PausePolicy, pause_port_key, pauses_key
from forge_dagster.core.store import ClaimedJob, ForgeStore
from forge_dagster.core.store.batch_store import Settlement
from forge_dagster.core.store.job_store import backoff_delay

log = logging.getLogger(__name__)

# How long a batch may sit in `submitting` before a run resumes it. One submission makes at most about six
# provider calls in a row (a lookup, the upload, the create, three reconcile lookups), each bounded by the
# client timeout (60 s by default), plus reconcile pauses of a few seconds: some six minutes at worst.
# Fifteen minutes leaves room, so a submission still under way is never resumed beside itself.
STALE_SUBMITTING_S = 900.0


@dataclass
class BuildReport:
    claimed: int = 0
    batches: list[int] = field(default_factory=list)  # submitted now (or resumed)
    submitted_jobs: int = 0
    failed_jobs: int = 0
    requeued_jobs: int = 0
    budget_held: int = 0  # back to pending without an attempt spent: a budget would be exceeded
    resumed: int = 0
    ambiguous: int = 0
    errors: list[str] = field(default_factory=list)


def _render(job: ClaimedJob, catalog: ProcessorCatalog, ports: Mapping[Provider, ProviderPort], repair=None):
    """(group key, request) for the job, or raise ValueError with the reason it cannot run."""
    try:
        processor = catalog.get_version(job.processor, job.processor_version)
    except KeyError:
        version = f" version {job.processor_version}" if job.processor_version else ""
        raise ValueError(f"unknown processor {job.processor!r}{version}") from None
    if processor.provider not in ports:
        raise ValueError(f"no credentials configured for provider {processor.provider}")
    problems = validate_input(processor, job.payload)
    if problems:
        raise ValueError("input: " + "; ".join(problems))
    try:
        request = render_job_request(processor, job.payload, custom_id_for(job.id, job.attempt), repair)
    except TemplateError as exc:
        raise ValueError(f"template: {exc}") from exc
    return group_key(processor.provider, processor.model, processor.name, processor.version), request


def build_and_submit(
    store: ForgeStore,
    catalog: ProcessorCatalog,
    ports: Mapping[Provider, ProviderPort],
    *,
    claim_limit: int = 5000,
    max_requests_per_batch: int | None = None,
    lease_ttl_s: float = 300.0,
    quota: PausePolicy | None = None,
) -> BuildReport:
    """One builder pass: resume stale submissions, then claim, shape and submit new batches. `ports` may be
    a `KeyPorts` (several keys per provider). Jobs whose provider keys are all paused, or whose model's
    submission is held for its enqueued-token limit, go back to pending without spending an attempt."""
    report = BuildReport()
    resume_stale_submissions(store, catalog, ports, report)
    jobs = store.jobs.claim(claim_limit, mode="batch", to_state="claimed", ttl_s=lease_ttl_s)
    report.claimed = len(jobs)
    if not jobs:
        return report
    repairs = repairs_for(store, catalog, [(j.id, j.attempt, j.processor, j.processor_version) for j in jobs])
    by_cid: dict[str, ClaimedJob] = {}
    items, refused = [], []
    for job in jobs:
        try:
            key, request = _render(job, catalog, ports, repairs.get(job.id))
        except ValueError as exc:
            refused.append((job, str(exc), False))
            continue
        by_cid[request.custom_id] = job
        items.append((key, request))
    keys = KeyPorts.of(ports)
    gate = BatchGate(store, keys, quota)
    items, waiting = gate.split(items, by_cid, catalog)  # paused keys, held models: back to pending, unspent
    store.jobs.release(waiting.jobs)
    report.errors += waiting.messages
    budget = admit_within_budgets(store, catalog, items, by_cid)
    items, report.budget_held = budget.admitted, len(budget.held)
    report.errors += budget.messages
    while True:
        try:
            shaped = shape_batches(items, max_requests=max_requests_per_batch)
            break
        except RequestTooLarge as exc:
            too_big = set(exc.custom_ids)
            refused += [
                (by_cid[c], f"request too large for one batch (limit {exc.limit} bytes)", False)
                for c in exc.custom_ids
            ]
            items = [(k, r) for k, r in items if r.custom_id not in too_big]
    for batch in shaped:
        processor = catalog.get_version(batch.key.processor_name, batch.key.processor_version)
        choices = gate.choices(processor)
        if not choices:
            jobs_now = [by_cid[r.custom_id] for r in batch.requests]
            waited = gate.wait(processor)
            if waited is None:  # it lists keys this process does not have
                refused += [(j, f"no {processor.provider} key configured for processor {processor.name}", False)
                            for j in jobs_now]
            else:  # a key was paused by an earlier batch of this pass
                store.jobs.release([(j, *waited) for j in jobs_now])
                report.errors.append(f"{len(jobs_now)} jobs {waited[0]}")
            continue
        members = [(by_cid[r.custom_id], r.custom_id) for r in batch.requests]
        batch_id, forge_batch_id, held = store.batches.record_intent(
            provider=batch.provider,
            model=batch.model,
            processor=batch.key.processor_name,
            version=batch.key.processor_version,
            members=members,
            bytes_=batch.total_bytes,
        )
        requests = [r for r in batch.requests if by_cid[r.custom_id].id in held]
        spec = BatchSpec(forge_batch_id, batch.provider, batch.model, requests, batch.key.processor_name)
        chosen = [keys.port(k) for k in choices]
        if not submit_batch(store, chosen[0], batch_id, spec, report, resume=False, fallbacks=chosen[1:],
                            quota=gate.policy):
            gate.refresh()  # a key may have been paused: the next batches skip it
    if refused:
        store.jobs.fail_many(refused)
        report.failed_jobs += len(refused)
    return report


def spec_for_batch(store: ForgeStore, catalog: ProcessorCatalog, batch_id: int) -> BatchSpec:
    """Rebuild a batch's spec from its stored members (same custom_ids, same rendered bodies)."""
    batch = store.batches.get(batch_id)
    requests = []
    members = [m for m in store.batches.members(batch_id) if m["state"] == "submitted"]
    repairs = repairs_for(store, catalog, [(m["id"], m["attempt"], m["processor"], m["processor_version"])
                                           for m in members])
    for m in members:
        processor = catalog.get_version(m["processor"], m["processor_version"])
        requests.append(render_job_request(processor, m["payload"], m["custom_id"], repairs.get(m["id"])))
    return BatchSpec(
        batch["forge_batch_id"], Provider(batch["provider"]), batch["model"], requests, batch["processor"]
    )


def resume_stale_submissions(
    store: ForgeStore,
    catalog: ProcessorCatalog,
    ports: Mapping[Provider, ProviderPort],
    report: BuildReport,
    *,
    older_than_s: float = STALE_SUBMITTING_S,
    limit: int = 100,
) -> None:
    """Finish submissions a crash left in `submitting`: find the provider's batch, or create it once.
    Each batch is claimed by one run alone (two overlapping runs never both resume it) and resumed with
    the key it went out with (a provider batch is visible only to its key's organization); a lookup by
    shape (Anthropic) skips the provider batches the store already gives to other Forge batches."""
    keys = KeyPorts.of(ports)
    for _ in range(limit):
        batch = store.batches.claim_stale_submission(older_than_s)
        if batch is None:
            return
        batch_id, provider = batch["id"], Provider(batch["provider"])
        try:
            spec = spec_for_batch(store, catalog, batch_id)
        except KeyError as exc:
            report.errors.append(f"batch {batch_id}: cannot rebuild: {exc}")
            continue
        report.resumed += 1
        since = batch["created_at"].timestamp() - 60
        port = keys.for_batch(provider, store.keys.batch_keys([batch_id]).get(batch_id))
        port.mark_taken(store.batches.known_provider_batch_ids(str(provider), since - 2 * CLOCK_SKEW_S))
        submit_batch(store, port, batch_id, spec, report, resume=True, since=since)


def submit_batch(
    store: ForgeStore,
    port: ProviderPort,
    batch_id: int,
    spec: BatchSpec,
    report: BuildReport,
    *,
    resume: bool,
    since: float | None = None,
    fallbacks: Sequence[ProviderPort] = (),
    quota: PausePolicy | None = None,
) -> bool:
    """Submit one intended batch and record the outcome; on refusal its jobs are requeued or failed. A key
    whose quota or credit is exhausted (or that is refused) is paused, with its outbox notice, and the next
    of `fallbacks` (other keys of the provider) is tried; when none is left the batch ends failed and its
    jobs wait for a probe to bring a key back, their attempt unspent. True if the provider has the batch."""
    policy = quota or PausePolicy()
    waits: list[float] = []
    for key_port in (port, *fallbacks):
        if not resume:  # the key is recorded before the call, so a resumed submission looks with it
            store.keys.set_batch_key(batch_id, key_port.credentials.alias)
        try:
            submitted = key_port.submit(spec, resume=resume, since=since)
        except BatchLimitError as exc:
            _refuse(
                store,
                batch_id,
                spec.requests,
                f"batch refused before submit: {exc}",
                retryable=False,
                report=report,
            )
            return False
        except ProviderError as exc:
            if exc.ambiguous:
                # The provider may have it: leave the intent in place; the next run reconciles it.
                report.ambiguous += 1
                report.errors.append(f"batch {batch_id}: outcome unknown ({exc.error_class}), will reconcile")
                return False
            if pauses_key(exc):
                waits.append(pause_port_key(store, key_port, exc, policy))
                report.errors.append(f"batch {batch_id}: key {spec.provider}:{key_port.credentials.alias} "
                                     f"paused ({exc.error_class}: {exc.message})"[:500])
                continue
            if exc.error_class == ErrorClass.RATE_LIMITED:
                # Nothing ran: the jobs wait as long as the provider asked, their attempt given back.
                reason = f"waiting: submit rate-limited: {exc.message}"
                report.requeued_jobs += store.batches.requeue_unsubmitted(batch_id, reason, exc.retry_after_s or 30.0)
                report.errors.append(f"batch {batch_id}: {reason}"[:500])
                return False
            _refuse(
                store,
                batch_id,
                spec.requests,
                f"submit {exc.error_class}: {exc.message}",
                retryable=exc.error_class == ErrorClass.TRANSIENT,
                report=report,
                delay_s=exc.retry_after_s,
            )
            return False
        store.batches.mark_submitted(batch_id, submitted.provider_batch_id, submitted.input_file_id)
        store.keys.confirm(str(spec.provider), key_port.credentials.alias)  # ends a pause episode on trial
        report.batches.append(batch_id)
        report.submitted_jobs += len(spec.requests)
        return True
    reason = f"waiting: every {spec.provider} key tried for this batch is paused (quota, credit or auth)"
    requeued = store.batches.requeue_unsubmitted(batch_id, reason, min(waits))
    report.requeued_jobs += requeued
    report.errors.append(f"batch {batch_id}: {requeued} jobs {reason}")
    return False


def _refuse(
    store: ForgeStore,
    batch_id: int,
    requests: list[ProviderRequest],
    reason: str,
    *,
    retryable: bool,
    report: BuildReport,
    delay_s: float | None = None,
) -> None:
    store.batches.fail_submission(batch_id, reason)
    batch = store.batches.get(batch_id)
    members = {m["custom_id"]: m for m in store.batches.members(batch_id)}
    settlements = [
        Settlement(
            job_id=members[r.custom_id]["id"],
            custom_id=r.custom_id,
            kind="retry" if retryable else "failed",
            reason=reason,
            delay_s=delay_s or backoff_delay(members[r.custom_id]["attempt"]),
        )
        for r in requests
        if r.custom_id in members
    ]
    with store.transaction() as conn:  # the settling and its notice commit together
        states = store.batches.settle(batch, settlements, from_states=["submitted"], pricing_version="-", conn=conn)
        store.outbox.write(rejection_messages(batch, settlements, states), conn=conn)
    report.requeued_jobs += sum(1 for s in states.values() if s == "pending")
    report.failed_jobs += sum(1 for s in states.values() if s != "pending")
    report.errors.append(f"batch {batch_id}: {reason}")
    log.warning("batch %s refused: %s (%s jobs)", batch_id, reason, len(settlements))
