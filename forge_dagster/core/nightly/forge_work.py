"""Forge's own work of the night: job outcomes, costs, retries and the rates the night is judged by
(invalid, not succeeded), from what the store reports (`KnowledgeRepository.job_outcomes`)."""

from __future__ import annotations

from typing import Any


def work_summary(outcomes: dict[str, Any]) -> dict[str, Any]:
    """The outcomes with their totals and rates added: jobs finished, invalid and not-succeeded shares,
    provider cost."""
    by_state: dict[str, int] = {}
    for row in outcomes.get("by_state", []):
        by_state[row["state"]] = by_state.get(row["state"], 0) + int(row["count"])
    finished = sum(by_state.values())
    bad = finished - by_state.get("succeeded", 0)
    return {**outcomes, "finished": finished, "invalid": by_state.get("invalid", 0),
            "invalid_rate": round(by_state.get("invalid", 0) / finished, 4) if finished else 0.0,
            "failure_rate": round(bad / finished, 4) if finished else 0.0,
            "cost_usd": round(float(sum(float(c["cost_usd"]) for c in outcomes.get("costs", []))), 6)}
