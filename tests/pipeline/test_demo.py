"""`forge demo` itself, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.helpers import ROOT

OPEN_STATES = {"pending", "claimed", "running", "submitted", "collected"}


def test_demo_runs_200_jobs_through_dagster_to_terminal_states(tmp_path, database_url, schema):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORGE_", "DAGSTER_"))}
    env["FORGE_HOME"] = str(tmp_path / "forge-home")
    external = bool(os.environ.get("FORGE_TEST_DATABASE_URL"))
    if external:  # against this machine's PostgreSQL, in this test's schema
        env.update(FORGE_DATABASE_URL=database_url, FORGE_DB_SCHEMA=schema)
    # else: no FORGE_DATABASE_URL at all, the embedded default, exactly as a new user runs it
    try:
        proc = subprocess.run([sys.executable, "-m", "forge_dagster.cli", "demo", "--jobs", "200", "--json"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        if not external:
            subprocess.run([sys.executable, "-m", "forge_dagster.cli", "stop"], env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["mode"] == ("external" if external else "embedded")
    assert summary["jobs_total"] == 200
    assert not OPEN_STATES & set(summary["jobs"]), summary
    assert summary["jobs"].get("succeeded", 0) >= 190  # the demo injects a few faults; retries absorb them
    assert summary["batches"] and set(summary["batches"]) == {"collected"}
    assert summary["cost_usd"] > 0
    # Every endpoint went end to end: a row per example processor, each with validated outputs.
    rows = summary["processors"]
    assert set(rows) == {"ticket_triage", "review_sentiment", "ticket_triage_responses", "product_embeddings",
                         "comment_moderation"}
    assert all(r["jobs"] == 40 and r["succeeded"] >= 36 for r in rows.values()), rows
    assert rows["comment_moderation"]["cost_usd"] == 0 and rows["product_embeddings"]["cost_usd"] > 0
    assert f"mode={summary['mode']}" in proc.stderr
    # It says the providers are the simulator it runs, not a provider, and where that simulator listens.
    assert re.search(r"providers: SIMULATOR \(a test double, not a provider\) at http://127\.0\.0\.1:\d+\)", proc.stderr)
