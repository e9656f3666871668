"""Connections and migrations for the store.

Every connection sets `search_path` to the store's schema, so SQL names tables without a schema and
tests can run side by side in schemas of their own. Migrations are the plain SQL files in
`migrations/`, applied in order under an advisory lock and recorded in `schema_version`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib import resources

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_LOCK = 0x466F726765  # "Forge": serialises concurrent migrators


def check_schema(schema: str) -> str:
    if not SCHEMA_RE.match(schema):
        raise ValueError(f"invalid schema name {schema!r}: use lowercase letters, digits and _")
    return schema


def connect_kwargs(schema: str, application_name: str = "forge", *, idle_in_transaction_s: float | None = None) -> dict:
    """libpq options that put every session of the store in `schema` and, with `idle_in_transaction_s`, have
    the server end a session left idle inside a transaction that long (its locks go with it)."""
    options = f"-c search_path={check_schema(schema)}"
    if idle_in_transaction_s:
        options += f" -c idle_in_transaction_session_timeout={int(idle_in_transaction_s * 1000)}"
    return {"options": options, "application_name": application_name}


def connect(url: str, schema: str, *, autocommit: bool = False, application_name: str = "forge"):
    """One connection in the store's schema."""
    return psycopg.connect(url, autocommit=autocommit, **connect_kwargs(schema, application_name))


# A connection back in the pool within this many seconds is handed out again without a check: a round
# trip saved on every hot-path call. One that broke meanwhile fails its statement (and is then replaced),
# which callers of a store must survive anyway, since a server can go away mid-statement too.
RECENTLY_USED_S = 1.0


class _Pool(ConnectionPool):
    """A pool that notes when each connection came back, and checks one only when it sat idle longer than
    RECENTLY_USED_S. The note is taken in `putconn` itself: a `reset` callback would send every return
    through the pool's worker thread (measured: +50 us of CPU and a thread hand-off per statement)."""

    def putconn(self, conn: psycopg.Connection) -> None:
        conn.info_returned_at = time.monotonic()  # type: ignore[attr-defined]
        super().putconn(conn)


def _check_if_idle(conn: psycopg.Connection) -> None:
    if time.monotonic() - getattr(conn, "info_returned_at", 0.0) > RECENTLY_USED_S:
        ConnectionPool.check_connection(conn)


def open_pool(url: str, schema: str, *, min_size: int = 1, max_size: int = 8, application_name: str = "forge",
              idle_in_transaction_s: float | None = None):
    """A connection pool whose connections all live in the store's schema; broken ones are replaced."""

    def check(conn: psycopg.Connection) -> None:
        try:
            _check_if_idle(conn)
        except Exception:
            # The server went away (a restart, a failover): the other idle connections are as dead as this
            # one. Replace them all now, instead of finding them one check at a time, each failed check
            # followed by a longer pause (1, 2, 4, 8 s...) before the caller gets a connection.
            pool.drain()
            raise

    pool = _Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=connect_kwargs(schema, application_name, idle_in_transaction_s=idle_in_transaction_s),
        check=check,
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool


@contextmanager
def one_statement(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A pooled connection in autocommit, for one self-contained statement: no BEGIN and COMMIT round
    trips around it (a claim or a finish is one statement, atomic on its own)."""
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.autocommit = False


def use(pool: ConnectionPool, conn: psycopg.Connection | None, *, statements: int = 2
        ) -> AbstractContextManager[psycopg.Connection]:
    """`conn` (the caller's transaction), else a pooled one: in a transaction of its own, or in autocommit
    when the work is a single statement."""
    if conn is not None:
        return nullcontext(conn)
    return one_statement(pool) if statements == 1 else pool.connection()


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for each migration shipped with the package, in order."""
    folder = resources.files("forge_dagster.core.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d+)_(.+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def migrate(url: str, schema: str) -> list[int]:
    """Create the schema if needed and apply pending migrations; return the versions applied now."""
    applied_now = []
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(check_schema(schema))))
        conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
        for version, name, text in migration_files():
            if version in done:
                continue
            conn.execute(text)
            conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
        conn.commit()
    return applied_now


def drop_schema(url: str, schema: str) -> None:
    """Drop the store's schema and everything in it (tests use this to clean up)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(check_schema(schema))))
