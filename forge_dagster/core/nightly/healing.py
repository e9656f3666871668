"""Self-healing: map a run's failure to a known signal and apply its remedy, at most `max_attempts` times
per signal within a window and never twice within the cooldown; then notify once and stop trying.

Signals and remedies:
- `stale_leases` (a worker lost a job's lease: `LeaseLost`): sweep expired leases back to pending.
- `gpu_lock_lost` (a GPU step lost the Redis mutex: `LockLost`, `FencedOut`): wait until Redis answers;
  the run retry takes the lock again. Job leases have nothing to do with it, so nothing is swept.
- `ollama_down` (Ollama does not answer): run the configured restart command, wait until it answers.
- `redis_down` (the GPU mutex's Redis does not answer): wait until it answers again.
A failure is matched by its exception class, and by the start of its message where the class alone is
too common (`ConnectionError`): never by a word anywhere in the text.

A remedy runs inside a sensor tick, so it is bounded by `remedy_budget_s`, well below the tick's timeout
(60 s by default): the restart command is killed at the budget, and waiting stops there. Every decision
is recorded in PostgreSQL (`healing_attempts`), so several sensors or processes share one count; the
give-up notification is written to the outbox in the same transaction as its record. An attempt whose
process died before recording its outcome is marked `interrupted` by the next decision on its signal.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from forge_dagster.core.ops.notify import sweep_notices

HEALING_TOPIC = "healing.exhausted"


class Signal(StrEnum):
    STALE_LEASES = "stale_leases"
    GPU_LOCK_LOST = "gpu_lock_lost"
    OLLAMA_DOWN = "ollama_down"
    REDIS_DOWN = "redis_down"


@dataclass(frozen=True)
class _Rule:
    signal: Signal
    classes: frozenset[str]
    message: re.Pattern[str] | None = None  # matched at the start of the message, when the class is not enough


_REDIS_IO = re.compile(r"(Error \d+ connecting to |Error while reading from |Timeout reading from |"
                       r"Timeout connecting to |Connection closed by server)")
_RULES = [
    _Rule(Signal.STALE_LEASES, frozenset({"LeaseLost"})),
    _Rule(Signal.GPU_LOCK_LOST, frozenset({"LockLost", "FencedOut"})),
    _Rule(Signal.OLLAMA_DOWN, frozenset({"OllamaUnavailable"})),
    # The ollama client raises the builtin ConnectionError with this sentence when nothing answers.
    _Rule(Signal.OLLAMA_DOWN, frozenset({"ConnectionError"}), re.compile(r"Failed to connect to Ollama")),
    _Rule(Signal.REDIS_DOWN, frozenset({"ConnectionError", "TimeoutError"}), _REDIS_IO),
]


def _message(cls: str, message: str) -> str:
    """The message without the `module.Class: ` prefix Dagster's error info puts before it."""
    return re.sub(rf"^(?:[\w.]+\.)?{re.escape(cls)}: ", "", message.strip(), count=1)


def classify_failure(errors: Iterable[tuple[str | None, str]]) -> Signal | None:
    """The signal for a failure given as (exception class name, message) pairs, or None if unknown."""
    errors = [(cls, msg) for cls, msg in errors if cls]
    for rule in _RULES:
        for cls, msg in errors:
            if cls in rule.classes and (rule.message is None or rule.message.match(_message(cls, msg))):
                return rule.signal
    return None


@dataclass(frozen=True)
class HealingPolicy:
    max_attempts: int = 3
    cooldown_s: float = 300.0
    window_s: float = 24 * 3600.0
    remedy_budget_s: float = 30.0  # the most a remedy may take (it runs in a sensor tick)

    @property
    def interrupted_after_s(self) -> float:
        """An attempt still `running` this long after it started died with its process (a remedy ends
        within its budget plus one probe's timeout)."""
        return 2 * self.remedy_budget_s


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

    action, row_id = repo.decide_healing(signal, run_id, policy.window_s, decide,
                                         interrupted_after_s=policy.interrupted_after_s)
    if action == "skip":
        return HealingOutcome(signal, "skip", "skipped", why[0] if why else None)
    if action == "gave_up":
        return HealingOutcome(signal, "gave_up", "notified")
    try:
        detail, outcome = remedy(), "ok"
    except Exception as exc:  # noqa: BLE001 - a failed remedy is recorded and counts as an attempt
        detail, outcome = f"{type(exc).__name__}: {exc}"[:500], "failed"
    except BaseException as exc:  # the tick or the process is being stopped: say so, then stop
        repo.finish_healing(row_id, "interrupted", f"{type(exc).__name__} while the remedy ran")
        raise
    repo.finish_healing(row_id, outcome, detail)
    return HealingOutcome(signal, "remedy", outcome, detail)


def wait_until_up(probe: Callable[[], object], *, timeout_s: float, every_s: float = 0.5) -> None:
    """Call `probe` until it stops raising; raise TimeoutError with its last error after `timeout_s`.
    (A probe must bound its own call: give its client a short timeout.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe()
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            if time.monotonic() >= deadline:
                raise TimeoutError(f"still down after {timeout_s:g}s: {exc}") from exc
        time.sleep(min(every_s, max(0.0, deadline - time.monotonic())))


def sweep_remedy(store) -> Callable[[], str]:
    """Free expired leases (their jobs go back to pending, or dead when attempts are spent)."""

    def remedy() -> str:
        report = store.jobs.sweep_expired(notices=sweep_notices)
        return f"swept: {report.requeued} requeued, {report.dead} dead"

    return remedy


def restart_command_remedy(command: str | None, probe: Callable[[], object], *, wait_s: float = 30.0,
                           budget_s: float = 30.0) -> Callable[[], str]:
    """Run the operator's restart command (no shell), then wait until `probe` succeeds; the two together
    take at most `budget_s` (the command is killed at the budget)."""

    def remedy() -> str:
        if not command:
            raise RuntimeError("no restart command configured (FORGE_NIGHTLY_OLLAMA_RESTART_CMD)")
        deadline = time.monotonic() + budget_s
        argv = shlex.split(command)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=budget_s, check=False)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"restart command still running after {budget_s:g}s; killed") from None
        if done.returncode != 0:
            raise RuntimeError(f"restart command exited {done.returncode}: {done.stderr.strip()[:200]}")
        wait_until_up(probe, timeout_s=max(0.0, min(wait_s, deadline - time.monotonic())))
        return f"restarted with {argv[0]}; answering again"

    return remedy


def wait_remedy(probe: Callable[[], object], *, wait_s: float = 30.0, budget_s: float = 30.0) -> Callable[[], str]:
    """Wait (at most `wait_s`, within `budget_s`) until `probe` succeeds: for what Forge cannot restart."""

    def remedy() -> str:
        wait_until_up(probe, timeout_s=min(wait_s, budget_s))
        return "answering again"

    return remedy
