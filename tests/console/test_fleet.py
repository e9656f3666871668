"""The live fleet: a `forge work` process registers, beats and holds leases; it leaves the fleet when it
stops, and a killed one is shown gone once its heartbeat ages out."""

from __future__ import annotations

import signal
import subprocess

from forge_dagster.core.ops.fleet import on_the_fleet
from forge_dagster.core.store import JobSpec
from tests.helpers import ECHO_HANDLER, forge_env, forge_process, register_step, wait_until


def _row(store, worker_id):
    return next(w for w in store.fleet.workers() if w["id"] == worker_id)


def test_a_registered_worker_beats_shows_what_it_holds_and_leaves_when_stopped(console, store):
    register_step(store, "echo_step")
    store.intake.enqueue([JobSpec("echo_step", {"i": 1}, mode="handler", processor_version="1.0.0")])
    with on_the_fleet(store, "handler", detail=ECHO_HANDLER, every_s=0.05) as worker_id:
        [job] = store.jobs.claim(1, mode="handler")
        wait_until(lambda: _row(store, worker_id)["holding_now"] == 1, timeout_s=10, what="the held lease")
        before = _row(store, worker_id)["heartbeat_at"]
        wait_until(lambda: _row(store, worker_id)["heartbeat_at"] > before, timeout_s=10, what="a heartbeat")
        page = console.get("/fleet").text
        assert ECHO_HANDLER in page and "1 alive" in page
    row = _row(store, worker_id)
    assert not row["alive"] and row["stopped_at"] is not None
    assert "0 alive" in console.get("/fleet").text



def test_forge_work_appears_on_the_fleet_page_and_disappears_when_it_stops(console, store, database_url, schema):
    register_step(store, "echo_step")
    proc = forge_process(["work", "--handler", ECHO_HANDLER], forge_env(database_url, schema),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: f"/ {proc.pid}</td>" in console.get("/fleet").text, timeout_s=120, every_s=0.2,
                   what="forge work on the fleet page")
        assert "1 alive" in console.get("/fleet").text
        proc.send_signal(signal.SIGTERM)  # a rolling update: the worker leaves the fleet on its way out
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "0 alive" in console.get("/fleet").text
    [gone] = [w for w in store.fleet.workers() if w["pid"] == proc.pid]
    assert gone["stopped_at"] is not None
