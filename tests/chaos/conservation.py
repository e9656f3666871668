"""The conservation check every chaos scenario ends with, read from the store's own tables.

- every job is in exactly one terminal state (succeeded, invalid, failed, dead, cancelled) with a reason, none
  open;
- no job was accepted twice: one transition into a terminal state per job in `job_events`;
- no stale completion: every transition out of a leased state was made by the worker holding the lease
  (the actor of the job's latest claim), or by the sweeper;
- cost booked once: the ledger has one row per billed (job, attempt), never for an attempt the job has
  not reached, and every succeeded job's final attempt is booked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import psycopg

TERMINAL = ("succeeded", "invalid", "failed", "dead", "cancelled")
OPEN = ("pending", "claimed", "running", "submitted", "collected")
LEASED = ("claimed", "running")
SWEEPER = "sweeper"


@dataclass
class Conservation:
    """What the tables say after a scenario; `problems` lists each violation in words."""

    inputs: int
    by_state: dict[str, int]
    open_jobs: list[int] = field(default_factory=list)
    without_reason: list[int] = field(default_factory=list)
    accepted_twice: list[int] = field(default_factory=list)
    stale_transitions: list[tuple[int, str, str]] = field(default_factory=list)  # (job, actor, to_state)
    cost_rows: int = 0
    cost_rows_duplicated: int = 0
    cost_beyond_attempt: list[int] = field(default_factory=list)
    succeeded_unbooked: list[int] = field(default_factory=list)

    @property
    def terminal(self) -> int:
        return sum(self.by_state.get(s, 0) for s in TERMINAL)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.terminal != self.inputs:
            found.append(f"inputs {self.inputs} != terminal {self.terminal} ({self.by_state})")
        for label, items in (("open", self.open_jobs), ("terminal without a reason", self.without_reason),
                             ("accepted twice", self.accepted_twice),
                             ("stale transitions accepted", self.stale_transitions),
                             ("cost booked beyond the job's attempt", self.cost_beyond_attempt),
                             ("succeeded without a booked cost", self.succeeded_unbooked)):
            if items:
                found.append(f"{len(items)} {label}: {items[:5]}")
        if self.cost_rows_duplicated:
            found.append(f"{self.cost_rows_duplicated} cost rows booked twice")
        return found

    def as_row(self) -> dict[str, int]:
        """The figures a benchmark table shows."""
        return {"inputs": self.inputs, **{s: self.by_state.get(s, 0) for s in TERMINAL},
                "open": len(self.open_jobs), "accepted_twice": len(self.accepted_twice),
                "stale_accepted": len(self.stale_transitions), "cost_rows": self.cost_rows}


def _stale(events: list[tuple[str | None, str | None, str]]) -> list[tuple[str, str]]:
    """Transitions out of a leased state made by someone other than the lease holder of the moment."""
    holder, stale = None, []
    for actor, from_state, to_state in events:
        if to_state in LEASED:
            holder = actor  # a claim (fresh or a takeover) names the new holder
            continue
        if from_state in LEASED and actor not in (holder, SWEEPER) and not (actor or "").startswith("operator:"):
            stale.append((actor or "?", to_state))
        holder = None
    return stale


def check(conn: psycopg.Connection, *, cost_expected: bool = True) -> Conservation:
    """Read the conservation figures of the store schema `conn` is in (its search_path).
    `cost_expected`: every succeeded job must have its final attempt booked (the provider reports usage)."""
    jobs = conn.execute("SELECT id, state, reason, attempt FROM jobs ORDER BY id").fetchall()
    report = Conservation(inputs=len(jobs), by_state=dict(Counter(state for _, state, _, _ in jobs)))
    report.open_jobs = [i for i, state, _, _ in jobs if state in OPEN]
    report.without_reason = [i for i, state, reason, _ in jobs if state in TERMINAL and not reason]
    events: dict[int, list[tuple[str | None, str | None, str]]] = defaultdict(list)
    for job_id, actor, from_state, to_state in conn.execute(
            "SELECT job_id, actor, from_state, to_state FROM job_events ORDER BY id"):
        events[job_id].append((actor, from_state, to_state))
    for job_id, trail in events.items():
        if sum(1 for _, _, to in trail if to in TERMINAL) > 1:
            report.accepted_twice.append(job_id)
        report.stale_transitions += [(job_id, actor, to) for actor, to in _stale(trail)]
    booked = conn.execute("SELECT job_id, attempt FROM costs").fetchall()
    report.cost_rows = len(booked)
    report.cost_rows_duplicated = len(booked) - len(set(booked))
    attempts = {i: attempt for i, _, _, attempt in jobs}
    report.cost_beyond_attempt = sorted({j for j, a in booked if a > attempts.get(j, -1)})
    if cost_expected:
        have = set(booked)
        report.succeeded_unbooked = [i for i, state, _, attempt in jobs
                                     if state == "succeeded" and (i, attempt) not in have]
    return report
