"""Self-healing: map a run's failure to a known signal and apply its remedy, at most `max_attempts` times
per signal within a window and never twice within the cooldown; then notify once and stop trying.

Signals and remedies:
- `stale_leases` (a worker lost its lease): sweep expired leases back to pending.
- `ollama_down` (Ollama does not answer): run the configured restart command, wait until it answers.
- `redis_down` (the GPU mutex's Redis does not answer): wait until it answers again.
Every decision is recorded in PostgreSQL (`healing_attempts`), so several sensors or processes share
one count; the give-up notification is written to the outbox in the same transaction as its record.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

HEALING_TOPIC = "healing.exhausted"


class Signal(StrEnum):
    STALE_LEASES = "stale_leases"
    OLLAMA_DOWN = "ollama_down"
    REDIS_DOWN = "redis_down"


_RULES: list[tuple[Signal, re.Pattern[str]]] = [
    # Checked in order: Ollama's client raises a builtin ConnectionError too, so it comes before Redis.
    (Signal.OLLAMA_DOWN, re.compile(r"OllamaUnavailable|failed to connect to ollama", re.I)),
    (Signal.STALE_LEASES, re.compile(r"LeaseLost|lease .* no longer held|lease expired", re.I)),
    (Signal.REDIS_DOWN, re.compile(r"redis\b.*(connection|timeout)|(ConnectionError|TimeoutError): "
                                   r"(error \d+ )?(connecting to|while reading from|timeout reading)", re.I)),
]


def classify_failure(errors: Iterable[tuple[str | None, str]]) -> Signal | None:
    """The signal for a failure given as (exception class name, message) pairs, or None if unknown."""
    texts = [f"{cls or ''}: {msg}" for cls, msg in errors]
    for signal, pattern in _RULES:
        if any(pattern.search(text) for text in texts):
            return signal
    return None


@dataclass(frozen=True)
class HealingPolicy:
    max_attempts: int = 3
    cooldown_s: float = 300.0
    window_s: float = 24 * 3600.0


@dataclass(frozen=True)
class HealingOutcome:
    """What the healer did: `remedy` (outcome ok/failed), `gave_up` (notified), or `skip` (with why)."""

    signal: str
    action: str
    outcome: str
    detail: str | None = None


def heal(repo, signal: Signal | str, run_id: str | None, remedy: Callable[[], str], policy: HealingPolicy,
         *, failure: str = "") -> HealingOutcome:
    """Apply `remedy` for `signal` if the policy allows; record the decision and its outcome."""
    signal = str(signal)
    why: list[str] = []

    def decide(window):
        if window.remedies >= policy.max_attempts:
            if window.gave_up:
                why.append(f"gave up after {window.remedies} attempts; already notified")
                return "skip", None, None, None
            text = (f"Forge self-healing gave up on `{signal}` after {window.remedies} attempts "
                    f"(run {run_id or '?'}). Last failure: {failure[:300] or 'unknown'}. An operator is needed.")
            outbox = {"topic": HEALING_TOPIC, "key": f"healing:{signal}:{run_id}",
                      "payload": {"signal": signal, "attempts": window.remedies, "run_id": run_id, "text": text}}
            return "gave_up", "notified", text, outbox
        if window.since_last_s is not None and window.since_last_s < policy.cooldown_s:
            why.append(f"cooling down: last attempt {window.since_last_s:.0f}s ago (< {policy.cooldown_s:g}s)")
            return "skip", None, None, None
        return "remedy", "running", None, None

    action, row_id = repo.decide_healing(signal, run_id, policy.window_s, decide)
    if action == "skip":
        return HealingOutcome(signal, "skip", "skipped", why[0] if why else None)
    if action == "gave_up":
        return HealingOutcome(signal, "gave_up", "notified")
    try:
        detail, outcome = remedy(), "ok"
    except Exception as exc:  # noqa: BLE001 - a failed remedy is recorded and counts as an attempt
        detail, outcome = f"{type(exc).__name__}: {exc}"[:500], "failed"
    repo.finish_healing(row_id, outcome, detail)
    return HealingOutcome(signal, "remedy", outcome, detail)


def wait_until_up(probe: Callable[[], object], *, timeout_s: float, every_s: float = 0.5) -> None:
    """Call `probe` until it stops raising; raise TimeoutError with its last error after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe()
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() >= deadline:
                raise TimeoutError(f"still down after {timeout_s:g}s: {exc}") from exc
        time.sleep(every_s)


def sweep_remedy(store) -> Callable[[], str]:
    """Free expired leases (their jobs go back to pending, or dead when attempts are spent)."""

    def remedy() -> str:
        report = store.sweep_expired()
        return f"swept: {report.requeued} requeued, {report.dead} dead"

    return remedy


def restart_command_remedy(command: str | None, probe: Callable[[], object], *, wait_s: float = 30.0
                           ) -> Callable[[], str]:
    """Run the operator's restart command (no shell), then wait until `probe` succeeds."""

    def remedy() -> str:
        if not command:
            raise RuntimeError("no restart command configured (FORGE_NIGHTLY_OLLAMA_RESTART_CMD)")
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"restart command exited {done.returncode}: {done.stderr.strip()[:200]}")
        wait_until_up(probe, timeout_s=wait_s)
        return f"restarted with {shlex.split(command)[0]}; answering again"

    return remedy


def wait_remedy(probe: Callable[[], object], *, wait_s: float = 30.0) -> Callable[[], str]:
    """Wait (bounded) until `probe` succeeds: for dependencies Forge cannot restart itself."""

    def remedy() -> str:
        wait_until_up(probe, timeout_s=wait_s)
        return "answering again"

    return remedy
