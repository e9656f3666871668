"""The batch pipeline through a real `dagster dev` tree survives SIGKILLs of an intake in progress, a run
worker, a step process, the daemon and the whole tree: nothing lost, taken in twice, created twice at the
provider or left hanging, and no attempt spent by our crashes (small counts; benchmarks/chaos.py has more)."""

from __future__ import annotations

import pytest

from tests.chaos.dagster_chaos import run_dagster_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.dagster_tree]


def test_dagster_tree_killed_five_ways_drains_with_every_job_and_line_accounted_for(
        database_url, chaos_schema, sim_process, tmp_path):
    report = run_dagster_chaos(database_url, chaos_schema, database_url, sim_process, tmp_path, large=120, small=30,
                               kills=["intake", "run_worker", "step", "daemon", "tree"], ttl_s=5.0,
                               drain_timeout_s=240.0)
    assert report.problems == [], report
    assert report.conservation.by_state == {"succeeded": 150}
    assert len(report.kills) == 5 and report.restarts == 2  # after the daemon's death and the tree's
    # How many killed runs end found dead by their lease (rather than failed by Dagster itself, or finished by
    # their surviving step) depends on where each kill lands; that a dead run is found by its lease is
    # shown deterministically in tests/pipeline/test_run_liveness.py and test_dagster_run_kills.py. Here:
    # none is left STARTED without a live process (in `problems`).
    assert report.last_kill_to_terminal_s is not None
