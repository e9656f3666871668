"""What a realtime call ended as, and writing those outcomes to the store in one transaction per flush:
fenced transitions (succeeded / invalid / retry-or-dead / failed / released), the cost ledger, the
provider call counters (for metrics) and the `jobs.invalid_or_dead` notification of jobs turned so."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from forge_dagster.core.models import AcceptedOutput, JobState
from forge_dagster.core.ops.notify import invalid_or_dead_messages
from forge_dagster.core.platform.pricing import usable_prices
from forge_dagster.core.store import ClaimedJob, ForgeStore
from forge_dagster.core.store.cost_store import BilledAttempt

log = logging.getLogger(__name__)

SUCCEEDED, INVALID, RETRY, FAILED, RELEASE = "succeeded", "invalid", "retry", "failed", "release"


@dataclass(frozen=True)
class Outcome:
    """The end of one claimed job's run in this worker.

    kind: succeeded (output accepted), invalid (output rejected for good), retry (back to pending with
    the attempt spent, or dead when attempts are used up), failed (not retryable), release (back to
    pending with the attempt given back: the provider never ran it).
    """

    job: ClaimedJob
    kind: str
    reason: str | None = None
    output: AcceptedOutput | None = None  # set for succeeded: what validation accepted
    billed: BilledAttempt | None = None
    delay_s: float = 0.0
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # provider calls made: (provider, class)


@dataclass
class FlushResult:
    states: dict[int, str]  # job id -> state written (jobs whose lease was lost are absent)
    cost_usd: Decimal


def write_outcomes(store: ForgeStore, outcomes: list[Outcome], *, retry_base_delay_s: float = 2.0) -> FlushResult:
    """Write a batch of outcomes in one transaction; every transition is fenced by the job's lease."""
    states: dict[int, str] = {}
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_kind[o.kind].append(o)
    with store.transaction() as conn:
        done = store.jobs.succeed_many([(o.job, o.output) for o in by_kind[SUCCEEDED]], conn=conn)
        states.update(dict.fromkeys(done, JobState.SUCCEEDED))
        invalid_by_reason: dict[str, list[Outcome]] = defaultdict(list)
        for o in by_kind[INVALID]:
            invalid_by_reason[o.reason or "invalid"].append(o)
        for reason, group in invalid_by_reason.items():
            done = store.jobs.finish_many([o.job for o in group], to_state=JobState.INVALID, reason=reason, conn=conn)
            states.update(dict.fromkeys(done, JobState.INVALID))
        failures = [(o.job, o.reason or "failed", o.kind == RETRY) for o in by_kind[RETRY] + by_kind[FAILED]]
        if failures:
            states.update(store.jobs.fail_many(failures, conn=conn, base_delay_s=retry_base_delay_s))
        released = store.jobs.release([(o.job, o.reason or "released", o.delay_s) for o in by_kind[RELEASE]],
                                      conn=conn)
        states.update(dict.fromkeys(released, JobState.PENDING))
        billed = [o.billed for o in outcomes if o.billed is not None]
        cost = store.costs.book_usage(billed, settled=set(states), pricing_version=usable_prices()[0].version,
                                     conn=conn)
        calls = sum((o.calls for o in outcomes), Counter())  # made whether or not the lease still held
        store.operations.add_provider_calls(calls, conn=conn)
        store.outbox.write(_rejection_notices(outcomes, states), conn=conn)
    return FlushResult(states, cost)


def _rejection_notices(outcomes: list[Outcome], states: dict[int, str]) -> list:
    """One `jobs.invalid_or_dead` row per processor whose jobs this flush turned invalid or dead."""
    by_processor: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
    for o in outcomes:
        if states.get(o.job.id) in (JobState.INVALID, JobState.DEAD):
            by_processor[o.job.processor].append((o.job.id, str(states[o.job.id]), o.reason))
    return [m for name, jobs in sorted(by_processor.items())
            for m in invalid_or_dead_messages(f"realtime:{name}", {"source": "realtime", "processor": name}, jobs)]


@dataclass
class RealtimeStats:
    claimed: int = 0
    succeeded: int = 0
    invalid: int = 0
    failed: int = 0
    retried: int = 0  # back to pending with the attempt spent
    dead: int = 0
    released: int = 0  # back to pending, attempt given back (keys paused, worker stopping)
    lease_lost: int = 0
    budget_held: int = 0  # released to wait: a budget would be exceeded
    calls: int = 0  # provider calls made
    rate_limited: int = 0  # 429s received
    call_retries: int = 0  # calls repeated inside this worker (429, transient)
    repairs: int = 0  # calls repeating a rejected answer with the validator's errors
    keys_paused: int = 0
    cost_usd: float = 0.0
    usage: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # provider -> tokens

    def count(self, result: FlushResult, outcomes: list[Outcome]) -> None:
        """Add one flush's written states to the totals."""
        written = Counter(result.states.values())
        self.succeeded += written[JobState.SUCCEEDED]
        self.invalid += written[JobState.INVALID]
        self.failed += written[JobState.FAILED]
        self.dead += written[JobState.DEAD]
        pending = [o for o in outcomes if result.states.get(o.job.id) == JobState.PENDING]
        self.released += sum(1 for o in pending if o.kind == RELEASE)
        self.retried += sum(1 for o in pending if o.kind != RELEASE)
        self.lease_lost += sum(1 for o in outcomes if o.job.id not in result.states)
        self.cost_usd += float(result.cost_usd)
        for o in outcomes:
            if o.billed is not None:
                self.usage[o.billed.provider].update(o.billed.usage)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "usage": {p: dict(u) for p, u in self.usage.items()}}
