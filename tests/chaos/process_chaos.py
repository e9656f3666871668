"""Process chaos: real `forge work` processes on realtime jobs against the simulator, one killed
(SIGKILL) every few seconds and restarted, and one frozen (SIGSTOP) past its lease and thawed (SIGCONT)
once others took its jobs over (no kill meanwhile), so whatever it finishes late must be rejected by the
lease fence.

Measured: jobs lost, results accepted twice, stale completions accepted (all must be 0), results the
frozen worker came back with and had rejected, and for each job a killed worker held: the time from the
kill until another worker claimed it again (about one lease TTL) and until that worker finished it (one
more call), and how many were orphaned a second time (the worker that took them over was killed too), the
cause of the long tail.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from forge_dagster.core.store import ForgeStore
from tests.chaos import conservation
from tests.chaos.harness import (
    Fleet,
    SimulatorProcess,
    WorkerProcess,
    counts,
    enqueue_realtime,
    fresh_sim,
    percentile,
    schema_conn,
    worker_env,
)


@dataclass
class Kill:
    at: float  # database clock (epoch seconds) right after the SIGKILL
    owner_prefix: str
    held: list[int]


@dataclass
class ProcessChaosReport:
    jobs: int
    workers: int
    lease_ttl_s: float
    elapsed_s: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    recovery_s: list[float] = field(default_factory=list)  # per job a killed worker held: kill -> finished
    reclaim_s: list[float] = field(default_factory=list)  # kill -> claimed again by another worker
    orphaned_again: int = 0  # jobs claimed more than once after their kill (their new worker died too)
    paused_held: list[int] = field(default_factory=list)  # jobs the frozen worker held
    # Leases of the frozen worker that ended by someone else's hand (a takeover or the sweep): each result
    # it came back with for them must have been refused. Read from the audit trail after the run, not from
    # a snapshot at the freeze (a claim or a commit already on the wire then lands a moment later).
    frozen_leases_lost: int = 0
    paused_taken_over: bool = False  # every one of them was taken over before SIGCONT
    late_rejected: int = 0  # results the frozen worker came back with, refused by the fence
    conservation: conservation.Conservation | None = None
    worker_errors: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def orphaned(self) -> int:
        return len(self.recovery_s)

    def row(self) -> dict:
        c = self.conservation
        return {"scenario": "process chaos", "jobs": self.jobs, "workers": self.workers,
                "kills": len(self.kills), "orphaned": self.orphaned, "lost": len(c.open_jobs),
                "duplicates accepted": len(c.accepted_twice), "stale accepted": len(c.stale_transitions),
                "frozen held": len(self.paused_held), "frozen taken over": self.paused_taken_over,
                "late rejected": self.late_rejected, "lease ttl s": self.lease_ttl_s,
                "reclaim p50 s": _round(percentile(self.reclaim_s, 0.5)),
                "reclaim p99 s": _round(percentile(self.reclaim_s, 0.99)),
                "recovery p50 s": _round(percentile(self.recovery_s, 0.5)),
                "recovery p99 s": _round(percentile(self.recovery_s, 0.99)),
                "orphaned again": self.orphaned_again,
                "jobs/s": round(self.jobs / self.elapsed_s, 1) if self.elapsed_s else None}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _running_by_owner(conn) -> dict[str, list[int]]:
    """Jobs in flight, by lease owner (`host:pid:random`)."""
    return dict(conn.execute("SELECT lease_owner, array_agg(id ORDER BY id) FROM jobs "
                             "WHERE state = 'running' GROUP BY lease_owner").fetchall())


def _held(running: dict[str, list[int]], worker: WorkerProcess) -> list[int]:
    return sorted(i for owner, ids in running.items() if owner.startswith(worker.owner_prefix) for i in ids)


def _sessions(conn) -> list[tuple]:
    """Forge's sessions that are not idle: state, wait, seconds in the transaction, statement start."""
    return conn.execute("SELECT state, wait_event_type, round(extract(epoch FROM now() - xact_start)), "
                        "left(query, 60) FROM pg_stat_activity WHERE application_name = 'forge' "
                        "AND state <> 'idle'").fetchall()


def _db_now(conn) -> float:
    return conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]


def _leases_lost(url: str, schema: str, owner_prefix: str) -> int:
    """How many claims of the worker named `owner_prefix` were followed, in their job's audit trail, by an
    event of someone else (another worker's takeover, the sweep) rather than by its own."""
    with schema_conn(url, schema) as conn:
        return conn.execute(
            "SELECT count(*) FROM (SELECT actor, to_state, lead(actor) OVER (PARTITION BY job_id ORDER BY id) "
            "AS next_actor FROM job_events) e "
            "WHERE e.to_state = 'running' AND starts_with(e.actor, %s) "
            "AND NOT coalesce(starts_with(e.next_actor, %s), false)", (owner_prefix, owner_prefix)).fetchone()[0]


def _recovery_times(url: str, schema: str, kills: list[Kill]) -> tuple[list[float], list[float], int]:
    """Per job a killed worker held when it died and did not finish before: seconds from the kill until
    another worker claimed it, and until one finished it; and how many jobs were claimed more than once
    after their kill."""
    reclaims, recoveries, again = [], [], 0
    with schema_conn(url, schema) as conn:
        for kill in kills:
            for finisher, finished_at, claims in conn.execute(
                    "SELECT f.actor, extract(epoch FROM f.at)::float8, c.claims FROM job_events f "
                    "CROSS JOIN LATERAL (SELECT array_agg(extract(epoch FROM e.at)::float8 ORDER BY e.id) AS claims"
                    "  FROM job_events e WHERE e.job_id = f.job_id AND e.to_state = 'running' "
                    "  AND e.at > to_timestamp(%s)) c "
                    "WHERE f.job_id = ANY(%s) AND f.to_state IN ('succeeded', 'invalid', 'failed', 'dead')",
                    (kill.at, kill.held)):
                if (finisher or "").startswith(kill.owner_prefix):  # it finished before the kill
                    continue
                recoveries.append(finished_at - kill.at)
                if claims:
                    reclaims.append(claims[0] - kill.at)
                    again += len(claims) > 1
    return reclaims, recoveries, again


def run_process_chaos(
    database_url: str, schema: str, sim: SimulatorProcess, home: Path, *, jobs: int, workers: int,
    concurrency: int, kill_every_s: float, lease_ttl_s: float, latency_ms: int = 200, pause: bool = True,
    timeout_s: float = 120.0, seed: int = 0,
) -> ProcessChaosReport:
    """Run the scenario on a fresh store schema; the simulator is configured here."""
    fresh_sim(sim, latency_ms=latency_ms)
    with ForgeStore(database_url, schema, pool_size=2) as store:
        enqueue_realtime(store, jobs)
    env = worker_env(database_url, schema, sim.url, home, FORGE_LEASE_TTL_S=str(lease_ttl_s))
    fleet, rng = Fleet(env, concurrency), random.Random(seed)
    report = ProcessChaosReport(jobs, workers, lease_ttl_s)
    for _ in range(workers):
        fleet.start()
    frozen: WorkerProcess | None = None
    try:
        with schema_conn(database_url, schema) as obs:
            warm_by = time.monotonic() + 120  # processes start slowly on a loaded machine
            while not counts(database_url, schema).get("succeeded") and time.monotonic() < warm_by:
                time.sleep(0.1)  # the clock starts when the fleet is working
            started = time.monotonic()
            deadline, next_kill = started + timeout_s, started + kill_every_s
            pause_at, pause_until = started + kill_every_s * 1.5, 0.0
            while time.monotonic() < deadline:
                state = dict(obs.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
                if not any(state.get(s) for s in conservation.OPEN):
                    break
                now, running = time.monotonic(), _running_by_owner(obs)
                # A worker still starting up holds nothing: only busy ones are killed or frozen.
                busy = [w for w in fleet.workers if w is not frozen and _held(running, w)]
                # Kills stop once the last jobs are in flight, so the tail is not orphaned again and again.
                bulk = state.get("pending", 0) >= concurrency * workers
                # No kill while a frozen worker waits for its jobs to be taken over by the living ones.
                waiting = frozen is not None and frozen.stopped
                if now >= next_kill and busy and bulk and not waiting:
                    victim = rng.choice(busy)
                    busy.remove(victim)
                    fleet.kill(victim)
                    killed_at = _db_now(obs)
                    time.sleep(0.2)  # a commit already on the wire lands; then what it held is orphaned
                    report.kills.append(Kill(killed_at, victim.owner_prefix, _held(_running_by_owner(obs), victim)))
                    fleet.start()
                    next_kill = now + kill_every_s
                if pause and frozen is None and now >= pause_at and busy:
                    frozen = rng.choice(busy)  # it has calls in flight: late results to come back with
                    fleet.pause(frozen)
                    report.paused_held = _held(_running_by_owner(obs), frozen)
                    pause_until = now + lease_ttl_s * 3 + 30  # past its leases, with room for slow takeovers
                if frozen is not None and frozen.stopped:
                    taken_over = not _held(running, frozen)
                    if taken_over or now >= pause_until:
                        report.paused_taken_over = taken_over
                        if not taken_over:  # what kept its jobs: for the failure message
                            report.notes.append(f"still held by the frozen worker: {_held(running, frozen)}; "
                                                f"jobs {state}; sessions {_sessions(obs)}")
                        fleet.resume(frozen)
                time.sleep(0.1)
            report.elapsed_s = time.monotonic() - started
    finally:
        fleet.stop_all()
    if frozen is not None:
        report.late_rejected = (frozen.stats() or {}).get("lease_lost", 0)
        report.frozen_leases_lost = _leases_lost(database_url, schema, frozen.owner_prefix)
    report.reclaim_s, report.recovery_s, report.orphaned_again = _recovery_times(database_url, schema, report.kills)
    with schema_conn(database_url, schema) as conn:
        report.conservation = conservation.check(conn)
    report.worker_errors = fleet.errors()
    return report
