"""Health checks of everything Forge runs on: disk, PostgreSQL, Redis, providers, Ollama, the Dagster
daemon (checked by the asset, which sees the instance), queue depths, failure rates and the outbox.

A check never raises: an exception becomes a `fail` result with its message, so one broken dependency
cannot hide the others from the triage gate.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from forge_dagster.core.nightly.settings import NightlySettings

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class CheckResult:
    """One check: its status (ok, warn, fail), a sentence for people, and the numbers behind it."""

    name: str
    status: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(data["name"], data["status"], data["summary"], dict(data.get("values") or {}))


Check = Callable[[], CheckResult]


def run_checks(checks: Mapping[str, Check]) -> list[CheckResult]:
    """Run every check; one that raises is reported as failed with its error, never propagated."""
    results = []
    for name, check in checks.items():
        started = time.monotonic()
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - a check's failure is a finding, not a crash
            result = CheckResult(name, FAIL, f"{type(exc).__name__}: {exc}"[:500])
        elapsed = round((time.monotonic() - started) * 1000, 1)
        results.append(CheckResult(result.name, result.status, result.summary, {**result.values, "ms": elapsed}))
    return results


def _worst(*statuses: str) -> str:
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def disk_check(path: Path, min_free_gb: float) -> Check:
    """Free space where Forge keeps its state: fail below `min_free_gb`, warn below twice that."""

    def check() -> CheckResult:
        target = path
        while not target.exists() and target != target.parent:
            target = target.parent  # not created yet: the disk it will live on
        usage = shutil.disk_usage(target)
        free_gb = usage.free / 1024**3
        status = FAIL if free_gb < min_free_gb else WARN if free_gb < 2 * min_free_gb else OK
        return CheckResult("disk", status, f"{free_gb:.1f} GB free at {target}",
                           {"free_gb": round(free_gb, 2), "used_pct": round(100 * usage.used / usage.total, 1)})

    return check


def postgres_check(store) -> Check:
    """A round trip to the lease store's PostgreSQL."""

    def check() -> CheckResult:
        with store.transaction() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        return CheckResult("postgres", OK, f"PostgreSQL {version} answers", {"version": version})

    return check


def redis_check(client) -> Check:
    """A PING to the Redis that holds the GPU mutex."""

    def check() -> CheckResult:
        client.ping()
        return CheckResult("redis", OK, "Redis answers PING")

    return check


def providers_check(ports: Mapping[Any, Any], *, timeout_s: float = 10.0) -> Check:
    """List models at each configured provider with a fresh official client (cheap, spends no tokens)."""

    def check() -> CheckResult:
        import anthropic
        import openai

        statuses, values = [], {}
        for provider, port in ports.items():
            creds = port.credentials
            kwargs = {"api_key": creds.get_secret_value(), "base_url": creds.base_url, "timeout": timeout_s,
                      "max_retries": 0}
            client = openai.OpenAI(**kwargs) if str(provider) == "openai" else anthropic.Anthropic(**kwargs)
            try:
                client.models.list()
                values[str(provider)] = OK
            except Exception as exc:  # noqa: BLE001 - reported per provider
                values[str(provider)] = f"{type(exc).__name__}: {exc}"[:200]
                statuses.append(FAIL)
            finally:
                client.close()
        if not ports:
            return CheckResult("providers", WARN, "no provider configured", values)
        failing = [p for p, v in values.items() if v != OK]
        summary = f"{len(ports) - len(failing)}/{len(ports)} providers answer" + (
            f"; failing: {', '.join(failing)}" if failing else "")
        return CheckResult("providers", _worst(*statuses), summary, values)

    return check


def ollama_check(runtime) -> Check:
    """Ollama answers, has the configured model installed, and lists what is loaded."""

    def check() -> CheckResult:
        installed = runtime.has_model()
        loaded = runtime.loaded_models()
        status = OK if installed else WARN
        summary = (f"Ollama answers at {runtime.host}; {runtime.model} "
                   f"{'installed' if installed else 'NOT installed'}; loaded: {', '.join(loaded) or 'none'}")
        return CheckResult("ollama", status, summary, {"model": runtime.model, "loaded": loaded})

    return check


def daemon_check(heartbeats: Mapping[str, float], *, required: bool, max_age_s: float,
                 now: float | None = None) -> CheckResult:
    """The Dagster daemon from its heartbeats ({daemon type: unix time}); stale ones fail."""
    now = time.time() if now is None else now
    if not heartbeats:
        status = WARN if required else OK
        return CheckResult("dagster_daemon", status, "no daemon heartbeat recorded (run outside the daemon)")
    ages = {kind: round(now - ts, 1) for kind, ts in heartbeats.items()}
    stale = sorted(kind for kind, age in ages.items() if age > max_age_s)
    summary = f"{len(ages)} daemons beating" + (f"; stale: {', '.join(stale)}" if stale else "")
    return CheckResult("dagster_daemon", FAIL if stale else OK, summary, {"ages_s": ages})


def queue_check(store, settings: NightlySettings) -> Check:
    """Pending work: too many jobs waiting, or the oldest waiting too long, is a warning."""

    def check() -> CheckResult:
        depths = store.knowledge.queue_depths()
        pending = sum(int(d["pending"]) for d in depths.values())
        oldest = max((d["oldest_age_s"] for d in depths.values()), default=0.0)
        status = WARN if pending > settings.queue_depth_max or oldest > settings.pending_age_max_s else OK
        return CheckResult("queues", status, f"{pending} jobs pending, oldest {oldest / 60:.0f} min",
                           {"pending": pending, "oldest_age_s": round(oldest, 1), "by_mode": depths})

    return check


def failure_rate_check(store, settings: NightlySettings) -> Check:
    """Share of jobs that ended invalid, failed or dead in the window, and batches that ended badly."""

    def check() -> CheckResult:
        since = datetime.now(UTC) - timedelta(hours=settings.window_h)
        outcomes = store.knowledge.job_outcomes(since)
        total = sum(r["count"] for r in outcomes["by_state"])
        bad = sum(r["count"] for r in outcomes["by_state"] if r["state"] != "succeeded")
        rate = bad / total if total else 0.0
        status = FAIL if rate > settings.failure_rate_fail else WARN if rate > settings.failure_rate_warn else OK
        batches = outcomes["batches_ended_badly"]
        if batches.get("ended_failed"):
            status = _worst(status, WARN)
        summary = f"{bad}/{total} jobs did not succeed in {settings.window_h:g} h ({rate:.1%})"
        return CheckResult("failure_rates", status, summary,
                           {"jobs": total, "not_succeeded": bad, "rate": round(rate, 4), "batches": batches})

    return check


def outbox_check(store, settings: NightlySettings) -> Check:
    """Undelivered notifications: an old one means the relay is stuck."""

    def check() -> CheckResult:
        waiting, age = store.outbox_lag()
        status = WARN if waiting and age > settings.outbox_lag_max_s else OK
        return CheckResult("outbox", status, f"{waiting} notifications waiting, oldest {age:.0f} s",
                           {"waiting": waiting, "oldest_age_s": round(age, 1)})

    return check
