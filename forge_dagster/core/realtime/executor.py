"""The realtime worker: claims `realtime` jobs from the lease store and runs them concurrently on asyncio.

Leases are fenced as everywhere: claims go pending -> running, heartbeats run as their own task, and
outcomes are written in small batches (one transaction per flush) through the fenced store calls. A job
whose lease was taken over is cancelled here and its late result is rejected by the fence. The worker
also refreshes key states from the store and probes its own paused keys, so `forge work --realtime`
recovers paused keys without Dagster; the quota sensor does the same inside Dagster.

Claimed jobs are admitted within the daily budgets (core/platform/budgets.py) before any call: those that would
exceed one go back to wait with their attempt given back. Every key is paced on its schedule in the
store, shared with the other workers using it (pacing.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

import psycopg

from forge_dagster.core.batch.shaping import group_key
from forge_dagster.core.models import ProviderError
from forge_dagster.core.ops.notify import sweep_notices
from forge_dagster.core.platform.budgets import BUDGET_RECHECK_S, admit_within_budgets
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.providers.key_router import KeyRouter
from forge_dagster.core.providers.keyring import KeyRing, ProviderKey
from forge_dagster.core.providers.quota import PausePolicy, pause_key, probe_due_keys
from forge_dagster.core.realtime.calls import CallPolicy, JobCall, PreparedJob, prepare
from forge_dagster.core.realtime.handler_worker import SWEEP_EVERY_S
from forge_dagster.core.realtime.recording import RELEASE, Outcome, RealtimeStats, write_outcomes
from forge_dagster.core.store import ClaimedJob, ForgeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealtimeConfig:
    concurrency: int = 64
    lease_ttl_s: float | None = None  # default: the store's
    idle_sleep_s: float = 0.2
    flush_every_s: float = 0.02
    flush_max: int = 256
    key_refresh_s: float = 1.0  # how often key states are read from the store (and due probes run)
    drain_s: float = 10.0  # on stop: time in-flight calls get to finish before they are released
    retry_base_delay_s: float = 2.0  # backoff base for jobs sent back to the queue
    call: CallPolicy = field(default_factory=CallPolicy)
    probe_keys: bool = True
    budget_recheck_s: float = BUDGET_RECHECK_S  # jobs held back by a budget are due again after this
    shared_pacing: bool = True  # pace keys on their schedules in the store (with every other worker)
    sweep_every_s: float = SWEEP_EVERY_S  # expired leases whose attempts are spent end dead (no claim takes them)
    claim_batch: int | None = None  # claim once this many slots are free (default: concurrency / 8)
    admission_horizon_s: float = 2.0  # claim no more than the keys' limiters admit within this (when known)


class RealtimeExecutor:
    """Runs realtime jobs with up to `concurrency` calls in flight, within every key's limits."""

    def __init__(self, store: ForgeStore, catalog: ProcessorCatalog, ring: KeyRing,
                 config: RealtimeConfig | None = None) -> None:
        self.store, self.catalog, self.ring = store, catalog, ring
        self.config = config or RealtimeConfig()
        self.ttl_s = self.config.lease_ttl_s or store.lease_ttl_s
        self.router = KeyRouter(ring)
        self.stats = RealtimeStats()
        self._calls = JobCall(self.router, self.config.call, self.stats, self._pause, self._confirm)
        # Leases held: jobs whose call runs (task not done), and jobs whose outcome waits for its write
        # (heartbeats cover both). A slot frees when a call ends, so calls stay `concurrency` deep while
        # outcomes are written; the leases held are bounded by twice that.
        self._in_flight: dict[int, tuple[ClaimedJob, asyncio.Task]] = {}
        self._outcomes: asyncio.Queue[Outcome] | None = None

    @property
    def pause_policy(self) -> PausePolicy:
        return self.config.call.pause

    # -- keys ------------------------------------------------------------------------------------
    async def _pause(self, key: ProviderKey, error: ProviderError) -> None:
        result = await asyncio.to_thread(pause_key, self.store, key, error, self.pause_policy)
        if result.paused:
            self.stats.keys_paused += 1
        row = await asyncio.to_thread(self.store.keys.get, str(key.provider), key.alias)
        if row is not None and row["state"] == "paused":
            self.router.mark_paused(key, row["paused_until"])
        elif row is None:
            self.router.mark_paused(key, None)

    async def _confirm(self, key: ProviderKey) -> None:
        self.router.mark_confirmed(key)
        await asyncio.to_thread(self.store.keys.confirm, str(key.provider), key.alias)

    async def _refresh_keys(self) -> None:
        if self.config.probe_keys:
            report = await asyncio.to_thread(probe_due_keys, self.store, self.ring, self.pause_policy)
            for name in report.resumed:
                log.info("key %s resumed by probe", name)
        self.router.update(await asyncio.to_thread(self.store.keys.all))

    async def _key_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._refresh_keys()
            except Exception:  # the database may be restarting; the next round tries again
                log.warning("key refresh failed", exc_info=True)
            await _wait(stop, self.config.key_refresh_s)

    # -- leases ----------------------------------------------------------------------------------
    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        """Free expired leases, as `forge work` does: a claim takes over a lease with attempts left, but
        only the sweep ends a job whose last attempt died with its worker (no Dagster sensor may run)."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.store.jobs.sweep_expired, notices=sweep_notices)
            except Exception:  # the database may be restarting; the next round tries again
                log.warning("lease sweep failed", exc_info=True)
            await _wait(stop, self.config.sweep_every_s)

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _wait(stop, self.ttl_s / 3)
            jobs = [job for job, _ in self._in_flight.values()]
            if not jobs:
                continue
            try:
                held = await asyncio.to_thread(self.store.jobs.heartbeat, jobs, ttl_s=self.ttl_s)
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
                continue
            for job in jobs:
                entry = self._in_flight.get(job.id)
                if job.id not in held and entry is not None and entry[0] is job:
                    log.warning("job %s: lease lost (taken over or finished elsewhere); call cancelled", job.id)
                    entry[1].cancel()

    # -- admission -------------------------------------------------------------------------------
    def _admit(self, jobs: list[ClaimedJob]) -> tuple[list[PreparedJob], list[Outcome]]:
        """Prepare claimed jobs and admit them within the budgets: (to call, already ended or waiting)."""
        prepared: list[PreparedJob] = []
        ended: list[Outcome] = []
        for job in jobs:
            p = prepare(job, self.catalog, self.router)
            (ended if isinstance(p, Outcome) else prepared).append(p)
        if not prepared:
            return prepared, ended
        by_cid = {p.request.custom_id: p for p in prepared}
        items = [(group_key(p.processor.provider, p.processor.model, p.processor.name, p.processor.version),
                  p.request) for p in prepared]
        try:
            check = admit_within_budgets(self.store, self.catalog, items, {c: p.job for c, p in by_cid.items()},
                                         recheck_s=self.config.budget_recheck_s, realtime=True)
        except Exception:  # the store may be restarting: the jobs wait a moment, nothing is spent
            log.warning("budget admission failed; %d jobs released", len(prepared), exc_info=True)
            return [], ended + [Outcome(p.job, RELEASE, "waiting: budget admission failed", delay_s=1.0)
                                for p in prepared]
        for message in check.messages:
            log.warning(message)
        self.stats.budget_held += len(check.held)
        ended += [Outcome(job, RELEASE, reason, delay_s=self.config.budget_recheck_s) for job, reason in check.held]
        return [by_cid[request.custom_id] for _, request in check.admitted], ended

    # -- outcomes --------------------------------------------------------------------------------
    async def _run_job(self, prepared: PreparedJob) -> None:
        assert self._outcomes is not None
        job = prepared.job
        try:
            outcome = await self._calls.run(prepared)
        except asyncio.CancelledError:
            outcome = Outcome(job, RELEASE, "released: realtime worker stopping", delay_s=0.0)
        except Exception as exc:  # a bug must not strand the job: it goes back with its attempt spent
            log.exception("job %s: unexpected error", job.id)
            outcome = Outcome(job, "retry", f"worker error: {type(exc).__name__}: {exc}"[:1000])
        await self._outcomes.put(outcome)  # the slot is free; the lease is held until the outcome is written

    async def _flush(self, batch: list[Outcome]) -> None:
        for attempt in range(5):
            try:
                result = await asyncio.to_thread(write_outcomes, self.store, batch,
                                                 retry_base_delay_s=self.config.retry_base_delay_s)
                break
            except Exception:
                log.warning("writing %d outcomes failed (attempt %d)", len(batch), attempt + 1, exc_info=True)
                await asyncio.sleep(0.2 * 2**attempt)
        else:  # the leases expire and another worker runs these jobs again; nothing is lost
            log.error("gave up writing %d outcomes; their leases will expire", len(batch))
            result = None
        for o in batch:
            self._in_flight.pop(o.job.id, None)
        if result is not None:
            self.stats.count(result, batch)

    async def _recorder(self, done: asyncio.Event) -> None:
        assert self._outcomes is not None
        while not (done.is_set() and self._outcomes.empty()):
            try:
                first = await asyncio.wait_for(self._outcomes.get(), timeout=0.1)
            except TimeoutError:
                continue
            batch = [first]
            await asyncio.sleep(self.config.flush_every_s)  # let a few more finish: one transaction for all
            while len(batch) < self.config.flush_max and not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            await self._flush(batch)

    # -- main loop -------------------------------------------------------------------------------
    async def run(self, *, until_idle: bool = False, until_drained: bool = False,
                  stop: threading.Event | None = None, max_jobs: int | None = None) -> RealtimeStats:
        """Claim and run realtime jobs until `stop` is set, `max_jobs` were claimed, (until_idle) no
        realtime job is open any more, or (until_drained) none is claimable now and none is in flight
        (jobs waiting for a paused key stay for a later run). In-flight calls get `drain_s` to finish,
        then are released."""
        stop = stop or threading.Event()
        self._outcomes = asyncio.Queue()
        background_stop, recorder_done = asyncio.Event(), asyncio.Event()
        await asyncio.to_thread(self.store.keys.register, self.ring.records())
        if self.config.shared_pacing:
            await asyncio.to_thread(self.ring.share_pacing, self.store)
        self.router.update(await asyncio.to_thread(self.store.keys.all))
        background = [asyncio.create_task(self._heartbeat_loop(background_stop)),
                      asyncio.create_task(self._key_loop(background_stop)),
                      asyncio.create_task(self._sweep_loop(background_stop))]
        recorder = asyncio.create_task(self._recorder(recorder_done))
        tasks: set[asyncio.Task] = set()
        try:
            while not stop.is_set():
                free, deferred = self._claim_size(max_jobs)
                jobs = await self._claim(free) if free > 0 and not deferred else []
                self.stats.claimed += len(jobs)
                if jobs:
                    admitted, ended = await asyncio.to_thread(self._admit, jobs)
                    for outcome in ended:  # written with the next flush
                        await self._outcomes.put(outcome)
                    for prepared in admitted:
                        task = asyncio.create_task(self._run_job(prepared))
                        self._in_flight[prepared.job.id] = (prepared.job, task)
                        tasks.add(task)
                tasks = {t for t in tasks if not t.done()}
                if jobs and len(jobs) == free:
                    await asyncio.sleep(0)  # full: the wait below happens once a slot frees
                if max_jobs is not None and self.stats.claimed >= max_jobs and not self._in_flight:
                    break
                if not self._in_flight and not jobs and self._outcomes.empty():
                    if until_drained:
                        break
                    if until_idle and await self._none_open():
                        break
                if tasks and (deferred or self._calls_running() >= self.config.concurrency):
                    await _first_done_or_stopped(tasks, stop)  # a full worker still hears its SIGTERM
                if self._lease_room() <= 0:
                    await self._written()
                elif not jobs and not deferred:
                    await _wait_thread_event(stop, self.config.idle_sleep_s)
        finally:
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.config.drain_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            recorder_done.set()
            await recorder
            background_stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await self.ring.aclose()
        return self.stats

    def _claim_size(self, max_jobs: int | None) -> tuple[int, bool]:
        """(how many jobs to claim now, whether to wait for a running call to end first). Claims are sized
        to the free slots, the leases this worker may hold and what the keys' limiters admit soon (jobs
        waiting for a slot would hold leases other workers could use); while calls run, a claim waits until
        `claim_batch` slots are free, so one statement claims several jobs."""
        running = self._calls_running()
        free = min(self.config.concurrency - running, self._lease_room())
        room = self.ring.admission_room(self.config.admission_horizon_s)
        if room is not None:
            free = min(free, room)
        if max_jobs is not None:
            free = min(free, max_jobs - self.stats.claimed)
            if free <= 0:
                return 0, False
        batch = self.config.claim_batch or max(1, self.config.concurrency // 8)
        return free, running > 0 and free < batch and (max_jobs is None or free < max_jobs - self.stats.claimed)

    async def _claim(self, k: int) -> list[ClaimedJob]:
        """Claim up to k jobs; none while the database is away (a claim cut off before it committed
        changed nothing; one cut off after it committed is swept back when its leases expire)."""
        try:
            return await asyncio.to_thread(self.store.jobs.claim, k, mode="realtime", ttl_s=self.ttl_s)
        except psycopg.OperationalError as exc:
            log.warning("claim failed, the database is away: %s; retrying", str(exc).splitlines()[0])
            await asyncio.sleep(self.config.idle_sleep_s)
            return []

    async def _none_open(self) -> bool:
        try:
            return await asyncio.to_thread(self.store.jobs.open_count, "realtime") == 0
        except psycopg.OperationalError:
            return False

    def _calls_running(self) -> int:
        return sum(not task.done() for _, task in self._in_flight.values())

    def _lease_room(self) -> int:
        """How many more leases this worker may hold (calls running plus outcomes not yet written)."""
        return 2 * self.config.concurrency - len(self._in_flight)

    async def _written(self) -> None:
        """Wait (a while at most) for the recorder to write outcomes, when the leases held are at their bound."""
        for _ in range(50):
            if self._lease_room() > 0:
                return
            await asyncio.sleep(self.config.flush_every_s)

    def run_sync(self, **kwargs) -> RealtimeStats:
        """`run` on a new event loop (for threads, the CLI and Dagster ops)."""
        return asyncio.run(self.run(**kwargs))


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _first_done_or_stopped(tasks: set[asyncio.Task], stop: threading.Event) -> None:
    """Wait until one of `tasks` is done or `stop` is set (slow calls must not delay a shutdown)."""
    watcher = asyncio.create_task(_wait_thread_event(stop, float("inf")))
    try:
        await asyncio.wait(tasks | {watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()


async def _wait_thread_event(event: threading.Event, seconds: float) -> None:
    """Sleep up to `seconds`, waking early (within 50 ms) when the thread event is set."""
    end = asyncio.get_running_loop().time() + seconds
    while not event.is_set():
        left = end - asyncio.get_running_loop().time()
        if left <= 0:
            return
        await asyncio.sleep(min(0.05, left))
