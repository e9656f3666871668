"""A Dagster run's lease in the store, held while its steps work: taken when a step starts, extended by a
heartbeat thread off the work's thread (as `forge work` extends its jobs' leases), left to run a handover
window past the step's end so the next step's process has time to start (found in a loaded CI run: a
one-TTL window let a slow step start be declared dead, and the run's collection was refused again and again). No Dagster import: the Dagster side passes run ids in.
"""

from __future__ import annotations

import logging
import threading

from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.run_lease_store import DeadRun

log = logging.getLogger(__name__)


class RunDeclaredDead(RuntimeError):
    """The run was declared dead (its lease expired): this process must not work for it any more."""


class RunHeartbeat:
    """Holds the lease of run `run_id` from `start()` to `stop()`: a daemon thread renews it every third
    of the TTL. When a renewal finds the run declared dead, `lost` is set and renewing stops."""

    def __init__(self, store: ForgeStore, run_id: str, job_name: str, partition: str | None,
                 ttl_s: float, handover_s: float | None = None) -> None:
        self.store, self.run_id, self.job_name, self.partition = store, run_id, job_name, partition
        self.ttl_s = ttl_s
        self.handover_s = max(ttl_s, handover_s or ttl_s)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"forge-run-lease-{run_id[:8]}", daemon=True)

    def start(self) -> RunHeartbeat:
        if not self.store.runs.take(self.run_id, self.job_name, self.partition, self.ttl_s):
            self.lost.set()
            raise RunDeclaredDead(f"run {self.run_id} was declared dead (its lease expired); it must not go on")
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.store.runs.renew(self.run_id, self.ttl_s):
                    self.lost.set()
                    log.error("run %s: its lease was declared dead; this process works for a failed run",
                              self.run_id)
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease outlives two of them
                log.warning("run %s: lease renewal failed", self.run_id, exc_info=True)

    def stop(self) -> None:
        """Stop renewing; the lease is extended once more, by the handover window, for the run's next step."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.ttl_s)
        if not self.lost.is_set():
            try:
                self.store.runs.renew(self.run_id, self.handover_s)
            except Exception:  # noqa: BLE001 - the lease then expires at its last beat's TTL
                log.warning("run %s: final lease renewal failed", self.run_id, exc_info=True)


def dead_run_message(dead: DeadRun, ttl_s: float) -> str:
    """What Dagster and the operator are told about a run found dead."""
    if dead.heartbeat_at is None:
        what = "it never took its lease within its start timeout"
    else:
        what = (f"its lease (TTL {ttl_s:g} s) expired; last heartbeat at {dead.heartbeat_at:%Y-%m-%d %H:%M:%S %Z} "
                f"from {', '.join(dead.owners) or 'no process'}")
    given = []
    if dead.released_jobs:
        given.append(f"{dead.released_jobs} claimed jobs back to pending, attempt unspent")
    if dead.expedited_batches:
        given.append(f"{dead.expedited_batches} unfinished submissions to resume now")
    return (f"Forge: run found dead: {what}. No process runs it; its work is asked for again"
            + (f" ({'; '.join(given)})." if given else "."))
