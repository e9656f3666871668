"""The nightly chain's health checks: what `forge health` checks (core/ops/service_checks.py: PostgreSQL, Redis,
providers, Ollama, the Dagster daemon, the outbox), seen as pass / warn / fail, plus the chain's own: disk,
the night's GPU warm-up, queue depths and failure rates.

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
from forge_dagster.core.ops import service_checks as core_health

OK, WARN, FAIL = "ok", "warn", "fail"
# How a `forge health` answer counts at night: down fails; not checked is worth a look.
_FROM_CORE = {core_health.OK: OK, core_health.WARN: WARN, core_health.DOWN: FAIL, core_health.SKIPPED: WARN}


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


def from_core(check: core_health.Check, *, name: str | None = None, down: str = FAIL) -> CheckResult:
    """A `forge health` check as a nightly result (`down` is what a down answer counts as)."""
    status = down if check.status == core_health.DOWN else _FROM_CORE[check.status]
    return CheckResult(name or check.name, status, check.detail)


def run_checks(checks: Mapping[str, Check]) -> list[CheckResult]:
    """Run every check; one that raises is reported as failed with its error, never propagated."""
    results = []
    for name, check in checks.items():
        started = time.monotonic()
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - a check's failure is a finding, not a crash
            result = CheckResult(name, FAIL, core_health.error_text(exc))
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


def postgres_check(url: str) -> Check:
    """The lease store's PostgreSQL answers."""
    return lambda: from_core(core_health.check_postgres(url))


def redis_check(url: str) -> Check:
    """The Redis that holds the GPU mutex answers."""
    return lambda: from_core(core_health.check_redis(url))


def providers_check(ports: Mapping[Any, Any]) -> Check:
    """Each configured provider's key answers a models listing (cheap, spends no tokens)."""

    def check() -> CheckResult:
        if not ports:
            return CheckResult("providers", WARN, "no provider configured")
        answers = {str(p): core_health.check_provider(str(p), str(p), port.credentials) for p, port in ports.items()}
        failing = [p for p, c in answers.items() if c.status != core_health.OK]
        summary = f"{len(answers) - len(failing)}/{len(answers)} providers answer" + (
            "; " + "; ".join(answers[p].detail for p in failing) if failing else "")
        return CheckResult("providers", _worst(*(from_core(c).status for c in answers.values())), summary,
                           {p: c.status for p, c in answers.items()})

    return check


def ollama_check(host: str, model: str) -> Check:
    """Ollama answers and has the nightly model installed."""
    return lambda: from_core(core_health.check_ollama(host, model=model))


def outbox_check(store, settings: NightlySettings) -> Check:
    """Undelivered notifications: an old one means the relay is stuck (a warning at night)."""
    return lambda: from_core(core_health.check_outbox(store, settings.outbox_lag_max_s), down=WARN)


def daemon_check(heartbeats: Mapping[str, float], *, required: bool, max_age_s: float,
                 now: float | None = None) -> CheckResult:
    """The Dagster daemon from its heartbeats ({daemon type: unix time}); none is a warning when
    `required` (a run outside the daemon is fine otherwise)."""
    missing = core_health.WARN if required else core_health.OK
    return from_core(core_health.check_heartbeats(heartbeats, max_age_s=max_age_s, missing=missing, now=now))


def warmup_check(warmup: Mapping[str, Any]) -> CheckResult:
    """The night's GPU warm-up (its recorded output): the model loaded under the mutex, or why not."""
    if warmup.get("error"):
        return CheckResult("gpu_warmup", FAIL, f"warm-up of {warmup.get('model', '?')} failed: {warmup['error']}")
    return CheckResult("gpu_warmup", OK, f"{warmup.get('model', '?')} loaded (fence {warmup.get('fence')})",
                       {"loaded": list(warmup.get("loaded") or [])})


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
