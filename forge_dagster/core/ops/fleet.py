"""A `forge work` process on the live fleet: registered in the store while it runs, its heartbeat beaten
off the work's thread, marked stopped when it ends (a killed one is told by its heartbeat growing old)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from forge_dagster.core.store import ForgeStore

log = logging.getLogger(__name__)

BEAT_EVERY_S = 5.0


@contextmanager
def on_the_fleet(store: ForgeStore, kind: str, *, detail: str | None = None,
                 every_s: float = BEAT_EVERY_S) -> Iterator[int]:
    """Register this process as a worker of `kind` for the duration of the block; yields its worker id."""
    worker_id = store.fleet.register(kind, detail=detail)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                store.fleet.beat(worker_id)
            except Exception as exc:  # the database away for a moment: the next beat tries again
                log.warning("fleet heartbeat of worker %s failed: %s", worker_id, exc)

    thread = threading.Thread(target=beat, name=f"forge-fleet-{worker_id}", daemon=True)
    thread.start()
    try:
        yield worker_id
    finally:
        stop.set()
        thread.join(timeout=every_s)
        try:
            store.fleet.stop(worker_id)
        except Exception as exc:
            log.warning("could not mark worker %s stopped (its heartbeat will age out): %s", worker_id, exc)
