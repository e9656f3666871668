"""One realtime job, start to end: render the request (its input checked as the batch builder checks it),
pick a key, wait for its rate limiter, call the port's `acomplete`, retry what is retryable within bounds,
validate the answer (fail closed), repair a rejected one, and bill every answer.

Errors by class (DESIGN.md section 5): a 429 blocks the key for its retry-after and the call waits its
turn again (bounded by `Backoff.max_retries`, with jitter); quota / credit exhaustion or a refused key
pauses that key and the call moves to the next key, or, with every key paused, the job is released to
wait without spending its attempt; transient errors retry a little here, then go back to the queue;
an invalid request fails the job.

Repairs reuse core/platform/repair.py, as the batch path does: an answer the validator rejected, and that a retry
could fix, is asked again in the same attempt with the rejected answer and the validator's errors as a
repair turn, at most the processor's `max_repair_attempts` times; past that the job ends invalid. Every
answer of the attempt is billed on the attempt's one ledger row.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from forge_dagster.core.batch.shaping import custom_id_for
from forge_dagster.core.models import ErrorClass, ProviderError, ProviderRequest, ResultItem, Usage
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.pricing import NoPrice, cost_usd
from forge_dagster.core.platform.processors import Processor, TemplateError, validate_input
from forge_dagster.core.platform.repair import (
    answer_text,
    render_job_request,
    repair_from_verdict,
    with_repair,
)
from forge_dagster.core.platform.validation import accepted_output, validate_result
from forge_dagster.core.providers.key_router import KeyRouter
from forge_dagster.core.providers.keyring import ProviderKey
from forge_dagster.core.providers.quota import PausePolicy, pauses_key
from forge_dagster.core.providers.ratelimit import Backoff
from forge_dagster.core.realtime.recording import (
    FAILED,
    INVALID,
    RELEASE,
    RETRY,
    SUCCEEDED,
    Outcome,
    RealtimeStats,
)
from forge_dagster.core.realtime.routing import charged_tokens, estimate_tokens
from forge_dagster.core.store import ClaimedJob
from forge_dagster.core.store.cost_store import BilledAttempt

log = logging.getLogger(__name__)

OK = "ok"  # the class of a call the provider answered (whatever the validator then said)


@dataclass(frozen=True)
class CallPolicy:
    backoff: Backoff = Backoff()
    transient_retries: int = 2
    pause: PausePolicy = PausePolicy()


# Pausing goes to the store (a thread); the executor supplies it: (key, error) -> paused_until or None.
PauseKey = Callable[[ProviderKey, ProviderError], Awaitable[object]]
ConfirmKey = Callable[[ProviderKey], Awaitable[None]]


@dataclass(frozen=True)
class PreparedJob:
    """A claimed job with its processor and first request, ready to be admitted and called."""

    job: ClaimedJob
    processor: Processor
    request: ProviderRequest


def prepare(job: ClaimedJob, catalog: ProcessorCatalog, router: KeyRouter) -> PreparedJob | Outcome:
    """The job's processor and request, or the FAILED outcome saying why it cannot run."""
    try:
        processor = catalog.get_version(job.processor, job.processor_version)
    except KeyError:
        return Outcome(job, FAILED, f"unknown processor {job.processor!r} version {job.processor_version}")
    if processor.handler is not None:
        return Outcome(job, FAILED, f"processor {processor.name} runs handler {processor.handler}, not a model: "
                                    "its jobs run in mode handler under `forge work --handler`")
    if not router.candidates(processor):
        return Outcome(job, FAILED, f"no {processor.provider} key configured for processor {processor.name}")
    problems = validate_input(processor, job.payload)
    if problems:
        return Outcome(job, FAILED, "input: " + "; ".join(problems))
    try:
        request = render_job_request(processor, job.payload, custom_id_for(job.id, job.attempt))
    except (TemplateError, ValueError) as exc:
        return Outcome(job, FAILED, f"template: {exc}")
    return PreparedJob(job, processor, request)


def _billed(job: ClaimedJob, processor: Processor, answers: list[ResultItem]) -> BilledAttempt | None:
    """The attempt's bill: the usage of every answer it got (the first and its repairs), summed."""
    usage = Usage()
    for item in answers:
        usage = usage + item.usage
    if not answers or not (usage.input_tokens or usage.output_tokens or processor.endpoint == "moderations"):
        return None  # moderations report no usage and are free: an answered one is booked at 0 USD
    try:
        cost = cost_usd(processor.provider, processor.model, usage, batch=False)
    except NoPrice as exc:
        log.warning("%s: tokens booked without a cost", exc)
        cost = None
    return BilledAttempt(job, str(processor.provider), processor.model, usage.to_dict(), cost,
                         answer_text(answers[-1]))


class JobCall:
    """Runs one prepared job against the provider through the key router and limiters."""

    def __init__(self, router: KeyRouter, policy: CallPolicy, stats: RealtimeStats,
                 pause_key: PauseKey, confirm_key: ConfirmKey) -> None:
        self.router, self.policy, self.stats = router, policy, stats
        self.pause_key, self.confirm_key = pause_key, confirm_key

    async def run(self, prepared: PreparedJob) -> Outcome:
        """Call, validate and repair (bounded) until the job has its outcome."""
        job, processor = prepared.job, prepared.processor
        calls: Counter[tuple[str, str]] = Counter()
        answers: list[ResultItem] = []
        repair = None
        while True:
            got = await self._answer(job, processor, with_repair(processor, prepared.request, repair), calls)
            if isinstance(got, Outcome):
                # An attempt that was answered already has spent its attempt: it is not given back.
                kind = RETRY if got.kind == RELEASE and answers else got.kind
                return replace(got, kind=kind, billed=_billed(job, processor, answers), calls=calls)
            answers.append(got)
            billed = _billed(job, processor, answers)
            verdict = validate_result(got, processor)
            if verdict.accepted:
                by = "realtime" if len(answers) == 1 else "realtime repair"
                return Outcome(job, SUCCEEDED, "validated", accepted_output(verdict, processor, by), billed,
                               calls=calls)
            repair = repair_from_verdict(got, verdict, job.attempt)
            if repair is None:  # a retry could not fix it (e.g. a refusal): fail closed now
                return Outcome(job, INVALID, verdict.reason, billed=billed, calls=calls)
            bound = processor.max_repair_attempts
            if len(answers) > bound:
                return Outcome(job, INVALID, f"repair attempts ({bound}) exhausted; last: {verdict.reason}"[:1000],
                               billed=billed, calls=calls)
            self.stats.repairs += 1

    async def _answer(self, job: ClaimedJob, processor: Processor, request: ProviderRequest,
                      calls: Counter[tuple[str, str]]) -> ResultItem | Outcome:
        """One answer from the provider for `request`, or the outcome that ends the job's run here."""
        estimate = estimate_tokens(request.body)
        provider = str(processor.provider)
        rate_retries = transient_retries = 0
        while True:
            key = self.router.pick(processor)
            if key is None:
                wait = self.router.seconds_until_probe(processor, cap_s=self.policy.pause.cap_s)
                return Outcome(job, RELEASE, f"waiting: every {processor.provider} key for {processor.name} "
                                             "is paused", delay_s=wait)
            ring = self.router.ring
            port = ring.built(key) or await asyncio.to_thread(ring.port, key)
            limiter = ring.limiter(key)
            await limiter.acquire(estimate)
            self.stats.calls += 1
            try:
                item = await port.acomplete(request)
            except ProviderError as exc:
                limiter.call_finished()
                calls[(provider, str(exc.error_class))] += 1
                if exc.error_class == ErrorClass.RATE_LIMITED:
                    self.stats.rate_limited += 1
                    limiter.rate_limited(exc.retry_after_s)
                    rate_retries += 1
                    if rate_retries > self.policy.backoff.max_retries:
                        return Outcome(job, RETRY, f"rate limited {rate_retries} times: {exc.message}")
                    self.stats.call_retries += 1
                    await asyncio.sleep(self.policy.backoff.delay(rate_retries))
                    continue
                if pauses_key(exc):
                    await self.pause_key(key, exc)  # the next turn of the loop takes another key, or waits
                    continue
                if exc.error_class == ErrorClass.TRANSIENT and transient_retries < self.policy.transient_retries:
                    transient_retries += 1
                    self.stats.call_retries += 1
                    await asyncio.sleep(self.policy.backoff.delay(transient_retries))
                    continue
                kind = RETRY if exc.retryable else FAILED
                return Outcome(job, kind, f"{exc.error_class}: {exc.message}"[:1000])
            except ValueError as exc:  # a body the port refuses before sending (e.g. streaming)
                limiter.call_finished()
                return Outcome(job, FAILED, f"request: {exc}")
            calls[(provider, OK)] += 1
            limiter.call_finished()
            limiter.settle(estimate, charged_tokens(request.body, item.usage))
            if self.router.needs_confirm(key):
                await self.confirm_key(key)
            return item
