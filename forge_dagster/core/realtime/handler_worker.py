"""The claim loop behind `forge work --handler`: claim, run a handler, validate, finish, fenced by the lease.

A handler is a non-LLM step named by the processors that declare it (`handler: module:function` in their
YAML). The loop claims only jobs of those processors (mode `handler`), so a handler never sees an LLM job;
what it returns is validated against the job's pinned processor like a provider's answer (fail closed): a
valid JSON object succeeds, anything else ends the job `invalid`. A handler raises `JobFailed` (with
`retryable`) or any exception (retryable) to fail the job instead.

Heartbeats run on their own thread, so a handler busy on the CPU does not lose its lease. A worker whose
lease was taken over must stop (DESIGN.md section 4): the heartbeat that finds it sets `job.lease_lost`,
which a long handler watches (`job.lease_lost.wait(...)` or `.is_set()` between steps) to return early;
whatever it returns then is discarded, never written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import psycopg

from forge_dagster.core.models import AcceptedOutput, JobState
from forge_dagster.core.ops.notify import invalid_or_dead_messages, sweep_notices
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.validation import accepted_output, validate_output
from forge_dagster.core.store import ClaimedJob, ForgeStore

log = logging.getLogger(__name__)

Handler = Callable[[ClaimedJob], Any]
SWEEP_EVERY_S = 5.0  # how often a worker frees expired leases (its claims also take them at once)
HANDLER_MODE = "handler"


class JobFailed(Exception):
    """Raised by a handler: the job failed for `reason`; `retryable` decides retry or fail."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    lease_lost: int = 0
    swept: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Outcome:
    """What one handler call came to: an accepted output, an invalid answer, or a failure."""

    job: ClaimedJob
    accepted: AcceptedOutput | None = None
    invalid: str | None = None
    failure: JobFailed | None = None


class _Heartbeat(threading.Thread):
    """Extends the leases of in-flight jobs every ttl/3, off the handlers' threads."""

    def __init__(self, store: ForgeStore, ttl_s: float) -> None:
        super().__init__(name="forge-heartbeat", daemon=True)
        self.store, self.ttl_s = store, ttl_s
        self.in_flight: dict[int, ClaimedJob] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.ttl_s / 3):
            with self.lock:
                jobs = list(self.in_flight.values())
            try:
                held = self.store.jobs.heartbeat(jobs, ttl_s=self.ttl_s)  # sets lease_lost on the others
            except Exception:  # the database may be restarting; the next beat tries again
                log.warning("heartbeat failed", exc_info=True)
                continue
            for job in jobs:
                if job.id not in held:
                    log.warning("job %s: lease lost (taken over or finished elsewhere): its handler must stop",
                                job.id)
                    with self.lock:
                        self.in_flight.pop(job.id, None)


class Worker:
    """Runs `handler` with `concurrency` threads over the jobs of `processors` (the registered versions that
    declare it), validating what it returns against each job's pinned version."""

    def __init__(
        self, store: ForgeStore, handler: Handler, processors: Sequence[Processor], *, concurrency: int = 4,
        lease_ttl_s: float | None = None, idle_sleep_s: float = 0.2, sweep_every_s: float = SWEEP_EVERY_S,
        retry_base_delay_s: float = 2.0,
    ) -> None:
        if not processors:
            raise ValueError("a handler worker needs the processors that declare its handler")
        self.store, self.handler, self.mode = store, handler, HANDLER_MODE
        self.processors = {p.key: p for p in processors}
        self.name = processors[0].handler or "handler"
        self.concurrency = concurrency
        self.ttl_s = lease_ttl_s or store.lease_ttl_s
        self.idle_sleep_s, self.sweep_every_s = idle_sleep_s, sweep_every_s
        self.retry_base_delay_s = retry_base_delay_s
        self.stats = WorkerStats()

    def _run_one(self, job: ClaimedJob) -> _Outcome:
        """Run the handler and judge what it returned; the outcome is recorded by the loop, in batches."""
        processor = self.processors.get((job.processor, job.processor_version))
        if processor is None:  # the claim takes only these processors' jobs: a row changed under us
            return _Outcome(job, failure=JobFailed(
                f"processor {job.processor} {job.processor_version} does not declare handler {self.name}",
                retryable=False))
        try:
            output = self.handler(job)
        except JobFailed as exc:
            return _Outcome(job, failure=exc)
        except Exception as exc:  # a crashing handler: retryable, reason kept
            return _Outcome(job, failure=JobFailed(f"{type(exc).__name__}: {exc}", retryable=True))
        verdict = validate_output(processor, output)
        if not verdict.accepted:
            detail = f" ({'; '.join(verdict.errors)})" if verdict.errors != [verdict.reason] else ""
            return _Outcome(job, invalid=f"handler {self.name}: {verdict.reason}{detail}"[:1000])
        return _Outcome(job, accepted=accepted_output(verdict, processor, f"handler {self.name}"))

    def _record(self, outcomes: list[_Outcome], beat: _Heartbeat) -> None:
        """Write finished outcomes: one statement for the successes, one per invalid reason, one for the
        failures. A job whose lease was lost is not written at all (its new holder decides)."""
        with beat.lock:
            for o in outcomes:
                beat.in_flight.pop(o.job.id, None)
        for o in outcomes:
            if o.job.lease_lost.is_set():
                self._lost(o.job)
        outcomes = [o for o in outcomes if not o.job.lease_lost.is_set()]
        successes = [(o.job, o.accepted) for o in outcomes if o.accepted is not None]
        invalid = [(o.job, o.invalid) for o in outcomes if o.invalid is not None]
        failures = [(o.job, o.failure.reason, o.failure.retryable) for o in outcomes if o.failure is not None]
        held = self._retrying(lambda: self.store.jobs.succeed_many(successes), set()) if successes else set()
        states = self._retrying(lambda: self._fail(invalid, failures), {}) if invalid or failures else {}
        for job, _ in successes:
            self._count(JobState.SUCCEEDED) if job.id in held else self._lost(job)
        for job in [job for job, _ in invalid] + [job for job, _, _ in failures]:
            self._count(states[job.id]) if job.id in states else self._lost(job)

    def _fail(self, invalid: list[tuple[ClaimedJob, str]], failures: list) -> dict[int, str]:
        """Invalid answers and failures, with their notices, in one transaction."""
        states: dict[int, str] = {}
        with self.store.transaction() as conn:
            by_reason: dict[str, list[ClaimedJob]] = defaultdict(list)
            for job, reason in invalid:
                by_reason[reason].append(job)
            for reason, jobs in by_reason.items():
                done = self.store.jobs.finish_many(jobs, to_state=JobState.INVALID, reason=reason, conn=conn)
                states.update(dict.fromkeys(done, JobState.INVALID))
            if failures:
                states.update(self.store.jobs.fail_many(failures, conn=conn, base_delay_s=self.retry_base_delay_s))
            reasons = {job.id: reason for job, reason in invalid} | {job.id: reason for job, reason, _ in failures}
            told = [(job_id, state, reasons[job_id]) for job_id, state in states.items()]
            self.store.outbox.write(invalid_or_dead_messages("worker", {"source": "worker"}, told), conn=conn)
        return states

    def _write(self, successes: list, failures: list) -> tuple[set[int], dict[int, str]]:
        """Write the outcomes, trying again while the database is away (see `_retrying`)."""
        held = self._retrying(lambda: self.store.jobs.finish_many(successes), set()) if successes else set()
        return held, (self._retrying(lambda: self._fail(failures), {}) if failures else {})

    @staticmethod
    def _retrying(write: Callable[[], Any], gave_up: Any, tries: int = 5) -> Any:
        """`write()`, tried again while the database is away. A write whose commit was cut off may have
        landed: the retry then finds the lease gone and the job counts as lost, never done twice. Given up
        after `tries`, the leases expire and the jobs are done again (at least once)."""
        for attempt in range(tries):
            try:
                return write()
            except psycopg.OperationalError as exc:
                log.warning("writing outcomes failed (%s); try %d of %d", str(exc).splitlines()[0], attempt + 1,
                            tries)
                time.sleep(min(2.0, 0.1 * 2 ** attempt))
        return gave_up

    def _none_open(self) -> bool:
        try:
            return self.store.jobs.open_count(self.mode, pins=list(self.processors)) == 0
        except psycopg.OperationalError:
            return False

    def _count(self, state: str) -> None:
        self.stats.by_state[state] = self.stats.by_state.get(state, 0) + 1
        if state == JobState.SUCCEEDED:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1

    def _lost(self, job: ClaimedJob) -> None:
        self.stats.lease_lost += 1
        log.warning("job %s: result dropped, the lease was taken over", job.id)

    def run(self, *, until_idle: bool = False, stop: threading.Event | None = None,
            max_jobs: int | None = None) -> WorkerStats:
        """Claim and run jobs until `stop` is set, or (until_idle) no job of this mode is open."""
        stop = stop or threading.Event()
        beat = _Heartbeat(self.store, self.ttl_s)
        beat.start()
        futures: set[Future] = set()
        last_sweep = 0.0
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="forge-work") as pool:
                while not stop.is_set():
                    free = self.concurrency - len(futures)
                    if max_jobs is not None:
                        free = min(free, max_jobs - self.stats.claimed)
                    try:
                        if time.monotonic() - last_sweep > self.sweep_every_s:
                            swept = self.store.jobs.sweep_expired(notices=sweep_notices)
                            self.stats.swept += swept.requeued + swept.dead
                            last_sweep = time.monotonic()
                        jobs = (self.store.jobs.claim(free, mode=self.mode, ttl_s=self.ttl_s, pins=list(self.processors))
                                if free > 0 else [])
                    except psycopg.OperationalError as exc:  # the database is away: try again shortly
                        log.warning("claim failed: %s; retrying", str(exc).splitlines()[0])
                        stop.wait(self.idle_sleep_s)
                        continue
                    self.stats.claimed += len(jobs)
                    for job in jobs:
                        with beat.lock:
                            beat.in_flight[job.id] = job
                        futures.add(pool.submit(self._run_one, job))
                    if futures:
                        # Full: wait for a slot. Just claimed: claim again at once. Otherwise: nap.
                        full = len(futures) >= self.concurrency
                        timeout = None if full else (0 if jobs else self.idle_sleep_s)
                        done, futures = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
                        if done:
                            self._record([f.result() for f in done], beat)
                        continue
                    if max_jobs is not None and self.stats.claimed >= max_jobs:
                        break
                    if until_idle and self._none_open():
                        break
                    stop.wait(self.idle_sleep_s)
                if futures:
                    self._record([f.result() for f in futures], beat)
        finally:
            beat.stopped.set()
        return self.stats
