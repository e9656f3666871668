"""The nightly chain's GPU steps: warm-up, the triage gate's model call, knowledge consolidation and the
release. Each holds the GPU mutex around its model calls and saves what it produced for the night under
the lease's fence, before letting go of the lock: a holder that lost the lock cannot record its output.

A failure (the GPU busy past the timeout, Redis or Ollama down, the lock lost, an answer that is not JSON)
is saved as the step's `error` instead of raised, so the later steps and the morning briefing still run
and say what failed. Only the release re-raises once it has recorded the failure: the run then shows red,
and the healing sensor sees why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from forge_dagster.core.nightly import consolidation
from forge_dagster.core.nightly.gpu_mutex import LockTimeout
from forge_dagster.core.nightly.health import CheckResult
from forge_dagster.core.nightly.triage import Triage, model_assessor, triage
from forge_dagster.core.ops.service_checks import error_text

WARMUP, TRIAGE, CONSOLIDATION, RELEASE = "gpu_warmup", "triage", "knowledge_consolidation", "gpu_release"


@dataclass
class TimedMutex:
    """A GPU mutex that remembers how long each hold waited for the lock, and whether it had to wait (the
    first attempt found it taken): the night tells about its waits instead of sitting through them."""

    mutex: Any
    waits: list[float] = field(default_factory=list)  # seconds, one per hold that had to wait

    @contextmanager
    def hold(self, timeout_s: float | None = None, **kwargs: Any) -> Iterator[Any]:
        started, attempts = time.monotonic(), self.mutex.stats.attempts
        acquired = False
        try:
            with self.mutex.hold(timeout_s, **kwargs) as lease:
                acquired = True
                self._note(started, attempts)
                yield lease
        except LockTimeout:
            if not acquired:  # waited the whole timeout: the longest wait of all
                self._note(started, attempts)
            raise

    def _note(self, started: float, attempts: int) -> None:
        if self.mutex.stats.attempts - attempts > 1:
            self.waits.append(time.monotonic() - started)

    @property
    def longest_wait_s(self) -> float:
        return max(self.waits, default=0.0)


def model_step(mutex, timeout_s: float, repo, night: str, step: str, work: Callable[[Any], dict[str, Any]],
               fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `work(lease)` under the GPU mutex and save its output for the night under the lease's fence.
    When the lock cannot be had (or is lost) the step saves `fallback` (what it found without the model)
    with the error, so the chain goes on and the briefing says what failed."""
    try:
        with mutex.hold(timeout_s) as lease:
            return _save_fenced(repo, night, step, lease, work(lease))
    except Exception as exc:  # noqa: BLE001 - recorded; the step's check and the briefing report it
        output = {**(fallback or {}), "error": error_text(exc)}
        repo.save_step(night, step, output)
        return output


def _save_fenced(repo, night: str, step: str, lease, output: dict[str, Any]) -> dict[str, Any]:
    lease.check()
    output = {**output, "fence": lease.fence}
    repo.save_step(night, step, output, fence=lease.fencing)
    return output


def warm_up(mutex, timeout_s: float, runtime, repo, night: str) -> dict[str, Any]:
    """Load the night's model under the GPU mutex; the output (or the failure) is saved for the night."""
    try:
        with mutex.hold(timeout_s) as lease:
            return _save_fenced(repo, night, WARMUP, lease, {"model": runtime.model, "loaded": runtime.warm_up()})
    except Exception as exc:  # noqa: BLE001 - recorded; health checks and the briefing report it
        output = {"model": runtime.model, "error": error_text(exc)}
        repo.save_step(night, WARMUP, output)
        return output


def assess(mutex, timeout_s: float, runtime, repo, night: str, checks: Sequence[CheckResult]) -> Triage:
    """The triage gate: all green is decided by the rules alone (no lock, no model); otherwise the
    anomalies go to the model under the GPU mutex. The rules' level stands whatever happens to the call."""
    result = triage(checks, None)
    if not result.anomalies:
        repo.save_step(night, TRIAGE, result.to_dict())
        return result
    try:
        with mutex.hold(timeout_s) as lease:
            result = triage(checks, model_assessor(runtime))
            _save_fenced(repo, night, TRIAGE, lease, result.to_dict())
            return result
    except Exception as exc:  # noqa: BLE001 - no lock (or lost): the rules' verdict without the model's
        result = replace(result, assessment={"error": error_text(exc)})
        repo.save_step(night, TRIAGE, result.to_dict())
        return result


def consolidate(mutex, timeout_s: float, runtime, repo, night: str,
                findings: Sequence[consolidation.Finding]) -> consolidation.ConsolidationReport:
    """Remember the night's findings not yet remembered: summarised by the model under the GPU mutex in
    one fenced write, or kept with their evidence alone when the lock could not be had or was lost."""
    fresh, duplicates = consolidation.fresh_findings(findings, repo)
    report = consolidation.ConsolidationReport(findings=len(findings), duplicates=duplicates)
    if fresh:
        try:
            with mutex.hold(timeout_s) as lease:
                consolidation.store_findings(fresh, repo, runtime, lease, night, report)
                _save_fenced(repo, night, CONSOLIDATION, lease, report.to_dict())
                return report
        except Exception as exc:  # noqa: BLE001 - the findings are kept; the briefing says what failed
            report.errors.append(error_text(exc))
            consolidation.store_unsummarised(fresh, repo, night, report)
    repo.save_step(night, CONSOLIDATION, report.to_dict())
    return report


def release(mutex, timeout_s: float, runtime, repo, night: str) -> dict[str, Any]:
    """Unload every model under the GPU mutex (checked with /api/ps). A failure is recorded, then raised."""
    try:
        with mutex.hold(timeout_s) as lease:
            return _save_fenced(repo, night, RELEASE, lease, {"unloaded": runtime.unload_all()})
    except Exception as exc:
        repo.save_step(night, RELEASE, {"error": error_text(exc)})
        raise
