"""Forge on four hosts of this machine (network namespaces): host D cut off mid-write while C carries on.
The CI-sized run of `python -m benchmarks.multihost` (which also runs Dagster on B and C, a batch round and
the SIGKILL scenario, with 5,000 jobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.cluster import PG_BIN
from tests.deploy.multihost import run_multihost
from tests.deploy.netns import available

pytestmark = [
    pytest.mark.multihost,
    pytest.mark.skipif(available() is not None, reason=f"network namespaces: {available()}"),
    pytest.mark.skipif(not (Path(PG_BIN) / "postgres").exists(), reason=f"no PostgreSQL 15 binaries in {PG_BIN}"),
]


def test_partitioned_host_jobs_are_taken_over_and_its_late_writes_refused_by_the_fence():
    report = run_multihost("partition", realtime=400, batch=0, workers_c=2, workers_d=2, concurrency=8,
                           lease_ttl_s=5.0, dagster=False, subnet="10.232.0")
    assert report.problems == [], (report.problems, report.errors)
    assert report.health == {"host-c": 0, "host-d": 0}  # the readiness probe, across the network
    assert report.split["host-d forge work"]["realtime"] > 0  # D worked before the cut
    assert report.held and report.reclaimed_by == {"host-c": len(report.held)}
    assert report.d_writes_after_takeover == []
    assert report.d_late_refused >= 1  # D came back with results for jobs C had taken: refused
    assert report.conservation.by_state == {"succeeded": 400}
    assert report.leftover_namespaces == []
