"""What the night tells Slack besides the briefing, each one message through the outbox, written once
(`KnowledgeRepository.notify_once`): a failed nightly run, a GPU step that waited on the mutex or was held
by the GPU pool longer than the threshold. (Healing's give-up is written by `healing.heal`.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RUN_FAILED_TOPIC = "nightly.run_failed"
GPU_WAIT_TOPIC = "nightly.gpu_wait"
NIGHTLY_JOBS = frozenset({"nightly_chain", "weekly_consolidation_job", "train_adapter"})


def run_failed(repo, *, job: str, run_id: str, night: str | None, steps: Sequence[tuple[str, str]],
               message: str) -> bool:
    """Tell that a nightly run failed: its job, night, and each failed step with its error. Once per run."""
    lines = [f"`{step}`: {error[:300]}" for step, error in steps] or [message[:300]]
    text = (f"Nightly run `{job}` {run_id[:8]} failed" + (f" (night {night})" if night else "") + ":\n"
            + "\n".join(f"• {line}" for line in lines))
    payload = {"title": f"Nightly run failed: {job}", "text": text, "job": job, "run_id": run_id, "night": night,
               "steps": [{"step": s, "error": e[:500]} for s, e in steps]}
    return repo.notify_once(f"nightly-run-failed:{run_id}", RUN_FAILED_TOPIC, payload)


def gpu_wait(repo, *, night: str, step: str, run_id: str, waited_s: float, kind: str, threshold_s: float) -> bool:
    """Tell that `step` waited `waited_s` for the GPU (`kind`: "mutex" or "pool"). Once per run and step."""
    what = "the GPU mutex (another holder had it)" if kind == "mutex" else "the Dagster pool `ollama_gpu`"
    text = (f"Night {night}: step `{step}` waited {waited_s:.1f} s for {what}, over the {threshold_s:g} s "
            f"threshold (FORGE_NIGHTLY_GPU_WAIT_NOTIFY_S). Run {run_id[:8]}.")
    payload = {"title": f"GPU wait: {step}", "text": text, "night": night, "step": step, "run_id": run_id,
               "waited_s": round(waited_s, 2), "kind": kind}
    return repo.notify_once(f"gpu-wait:{run_id}:{step}:{kind}", GPU_WAIT_TOPIC, payload)


def over_threshold(waited_s: float | None, threshold_s: float) -> bool:
    """A wait worth telling: it happened, and it lasted at least the threshold."""
    return waited_s is not None and waited_s >= threshold_s


def payload_lines(payloads: Sequence[dict[str, Any]]) -> list[str]:
    """The lines of several notices, for one grouped message."""
    return [str(p.get("text") or p.get("title") or p) for p in payloads]
