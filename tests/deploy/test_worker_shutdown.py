"""`forge work` in a rolling update: SIGTERM stops it cleanly, its leases released rather than left to expire."""

from __future__ import annotations

import json
import signal
import subprocess

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import ForgeStore, JobSpec
from tests.chaos.harness import enqueue_realtime, worker_env
from tests.helpers import forge_env, forge_process, register_step, session_forge_home, wait_until


def _stats(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_sigterm_releases_realtime_jobs_in_flight_with_their_attempt(store: ForgeStore, database_url: str,
                                                                      schema: str, remote_sim):
    remote_sim.configure(latency_ms=120_000)  # the calls stay in flight until the worker is told to stop
    ids = enqueue_realtime(store, 3)
    env = worker_env(database_url, schema, remote_sim.url, session_forge_home(), FORGE_LEASE_TTL_S="60")
    proc = forge_process(["work", "--concurrency", "3", "--drain-s", "0.5"], env=env, stdout=subprocess.PIPE,
                         text=True)
    try:
        wait_until(lambda: all(store.jobs.get(i)["state"] == "running" for i in ids), timeout_s=120,
                   what="three calls in flight")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert _stats(out)["claimed"] == 3
    for job_id in ids:  # back in the queue at once, not after the 60 s lease, and the attempt not spent
        job = store.jobs.get(job_id)
        assert (job["state"], job["lease_owner"], job["attempt"]) == ("pending", None, 0), job
        assert store.jobs.events(job_id)[-1]["reason"] == "released: realtime worker stopping"


def test_sigterm_lets_a_handler_in_flight_finish_and_records_it(store: ForgeStore, database_url: str, schema: str,
                                                                tmp_path):
    handler = "tests.deploy.handlers:gated"
    register_step(store, "gated_step", handler)
    gate = tmp_path / "gate"
    [job_id] = submit_jobs(store, [JobSpec("gated_step", {"gate": str(gate)})]).accepted
    env = forge_env(database_url, schema, FORGE_LEASE_TTL_S="60")
    proc = forge_process(["work", "--handler", handler, "--concurrency", "1"], env=env, stdout=subprocess.PIPE,
                         text=True)
    try:
        wait_until(lambda: store.jobs.get(job_id)["state"] == "running", timeout_s=120, what="the handler running")
        proc.send_signal(signal.SIGTERM)
        gate.touch()  # the handler finishes after the signal came
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert _stats(out)["succeeded"] == 1
    job = store.jobs.get(job_id)
    assert (job["state"], job["output"]) == ("succeeded", {"finished": True})
