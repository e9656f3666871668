"""One realtime job, start to end: render the request, pick a key, wait for its rate limiter, call the
port's `acomplete`, retry what is retryable within bounds, validate the answer (fail closed) and price it.

Errors by class (DESIGN.md section 5): a 429 blocks the key for its retry-after and the call waits its
turn again (bounded by `Backoff.max_retries`, with jitter); quota / credit exhaustion or a refused key
pauses that key and the call moves to the next key, or, with every key paused, the job is released to
wait without spending its attempt; transient errors retry a little here, then go back to the queue;
an invalid request fails the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forge_dagster.core.costs import UnknownModelPrice, cost_usd
from forge_dagster.core.models import ErrorClass, ProviderError, ResultItem
from forge_dagster.core.processors import Processor, ProcessorCatalog
from forge_dagster.core.quota import PausePolicy, pauses_key
from forge_dagster.core.ratelimit import Backoff
from forge_dagster.core.realtime.keyring import ProviderKey
from forge_dagster.core.realtime.recording import (
    FAILED,
    INVALID,
    RELEASE,
    RETRY,
    SUCCEEDED,
    Outcome,
    RealtimeStats,
)
from forge_dagster.core.realtime.routing import KeyRouter, estimate_tokens
from forge_dagster.core.shaping import custom_id_for
from forge_dagster.core.store import ClaimedJob
from forge_dagster.core.store.key_store import BilledAttempt
from forge_dagster.core.validation import validate_result

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallPolicy:
    backoff: Backoff = Backoff()
    transient_retries: int = 2
    pause: PausePolicy = PausePolicy()


# Pausing goes to the store (a thread); the executor supplies it: (key, error) -> paused_until or None.
PauseKey = Callable[[ProviderKey, ProviderError], Awaitable[object]]
ConfirmKey = Callable[[ProviderKey], Awaitable[None]]


def _billed(job: ClaimedJob, processor: Processor, item: ResultItem) -> BilledAttempt | None:
    usage = item.usage
    if not (usage.input_tokens or usage.output_tokens):
        return None
    try:
        cost = cost_usd(processor.provider, processor.model, usage, batch=False)
    except UnknownModelPrice:
        log.warning("no price for %s/%s: cost not booked", processor.provider, processor.model)
        cost = None
    return BilledAttempt(job, str(processor.provider), processor.model, usage.to_dict(), cost, item.text)


def judge(job: ClaimedJob, processor: Processor, item: ResultItem) -> Outcome:
    """The same fail-closed validation as batch results; a retryable rejection retries while attempts
    remain, then the job ends invalid."""
    verdict = validate_result(item, processor)
    billed = _billed(job, processor, item)
    if verdict.accepted:
        return Outcome(job, SUCCEEDED, "validated", verdict.output, billed)
    if verdict.retryable and job.attempt < job.max_attempts:
        return Outcome(job, RETRY, verdict.reason, billed=billed)
    return Outcome(job, INVALID, verdict.reason, billed=billed)


class JobCall:
    """Runs one claimed job against the provider through the key router and limiters."""

    def __init__(self, catalog: ProcessorCatalog, router: KeyRouter, policy: CallPolicy, stats: RealtimeStats,
                 pause_key: PauseKey, confirm_key: ConfirmKey) -> None:
        self.catalog, self.router, self.policy, self.stats = catalog, router, policy, stats
        self.pause_key, self.confirm_key = pause_key, confirm_key

    async def run(self, job: ClaimedJob) -> Outcome:
        try:
            processor = self.catalog.get_version(job.processor, job.processor_version)
        except KeyError:
            return Outcome(job, FAILED, f"unknown processor {job.processor!r} version {job.processor_version}")
        if not self.router.candidates(processor):
            return Outcome(job, FAILED, f"no {processor.provider} key configured for processor {processor.name}")
        try:
            request = processor.render_request(job.payload, custom_id_for(job.id, job.attempt))
        except ValueError as exc:
            return Outcome(job, FAILED, f"template: {exc}")
        estimate = estimate_tokens(request.body)
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
            limiter.call_finished()
            limiter.settle(estimate, item.usage.input_tokens + item.usage.output_tokens)
            if self.router.needs_confirm(key):
                await self.confirm_key(key)
            return judge(job, processor, item)
