"""Real `forge work --realtime` processes killed and frozen mid-flight: nothing lost, nothing twice."""

from __future__ import annotations

import pytest

from tests.chaos.process_chaos import run_process_chaos

pytestmark = pytest.mark.chaos


def test_killed_and_frozen_workers_lose_nothing_and_late_results_are_rejected(
    database_url, chaos_schema, remote_sim, chaos_home,
):
    report = run_process_chaos(database_url, chaos_schema, remote_sim, chaos_home, jobs=200, workers=3,
                               concurrency=4, kill_every_s=2.0, lease_ttl_s=2.0, latency_ms=300, timeout_s=90)
    c = report.conservation
    assert not c.problems, f"{c.problems}\n{report.worker_errors}"
    assert c.by_state == {"succeeded": 200}
    assert report.kills and report.orphaned > 0, "a kill should have caught calls in flight"
    assert report.paused_held and report.paused_taken_over, "the frozen worker's jobs should be taken over"
    # Everything the frozen worker held was finished by others; what it came back with was refused.
    assert report.late_rejected == len(report.paused_held)
    assert all(t > 0 for t in report.recovery_s)
