"""The triage gate: a deterministic rule score over the health checks, and the local model only for
anomalies.

When every check passes the night is GREEN and no model is called. Otherwise the level comes from the
rules alone (AMBER or RED), and only the anomalous checks go to the local model for a threat assessment,
which is advisory: it never changes the level.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from forge_dagster.core.nightly.health import FAIL, OK, CheckResult

GREEN, AMBER, RED = "GREEN", "AMBER", "RED"
WEIGHTS = {OK: 0, "warn": 1, FAIL: 3}
# A failure here stops Forge itself, whatever the rest says.
CRITICAL_CHECKS = frozenset({"postgres", "disk"})
RED_SCORE = 6

THREAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "threat": {"type": "string", "enum": ["low", "medium", "high"]},
        "summary": {"type": "string", "maxLength": 600},
        "actions": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 5},
    },
    "required": ["threat", "summary", "actions"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = (
    "You are the night operator of Forge, an LLM job platform. You receive only the health checks that "
    "did not pass. Assess the threat to tomorrow's work and propose at most five concrete actions. "
    "Answer with JSON only."
)


@dataclass(frozen=True)
class Triage:
    level: str
    score: int
    anomalies: list[CheckResult]
    assessment: dict[str, Any] | None = None
    model_called: bool = False
    usage: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "score": self.score, "anomalies": [a.to_dict() for a in self.anomalies],
                "assessment": self.assessment, "model_called": self.model_called, "usage": self.usage}


def rule_score(checks: Sequence[CheckResult]) -> int:
    """Sum of the checks' weights: ok 0, warn 1, fail 3."""
    return sum(WEIGHTS.get(c.status, WEIGHTS[FAIL]) for c in checks)


def rule_level(checks: Sequence[CheckResult]) -> str:
    """GREEN when all pass; RED on a critical failure or a score of 6+; AMBER otherwise."""
    score = rule_score(checks)
    if score == 0:
        return GREEN
    critical = any(c.status == FAIL and c.name in CRITICAL_CHECKS for c in checks)
    return RED if critical or score >= RED_SCORE else AMBER


Assessor = Callable[[list[CheckResult]], tuple[dict[str, Any], dict[str, int]]]


def triage(checks: Sequence[CheckResult], assess: Assessor | None) -> Triage:
    """Score the checks; call `assess` (the model) with the anomalies only, and never when all passed."""
    anomalies = [c for c in checks if c.status != OK]
    score, level = rule_score(checks), rule_level(checks)
    if not anomalies or assess is None:
        return Triage(level, score, anomalies)
    try:
        assessment, usage = assess(anomalies)
    except Exception as exc:  # noqa: BLE001 - the rules already decided; the model's view is a bonus
        return Triage(level, score, anomalies, {"error": f"{type(exc).__name__}: {exc}"[:300]}, True)
    return Triage(level, score, anomalies, assessment, True, usage)


def threat_prompt(anomalies: Sequence[CheckResult]) -> str:
    """The user message sent to the model: the anomalous checks as JSON."""
    rows = [{"check": a.name, "status": a.status, "summary": a.summary, "values": a.values} for a in anomalies]
    return "Health checks that did not pass tonight:\n" + json.dumps(rows, indent=1, default=str)


def model_assessor(runtime) -> Assessor:
    """An assessor over an `OllamaRuntime` (the caller holds the GPU mutex around the call)."""

    def assess(anomalies: list[CheckResult]) -> tuple[dict[str, Any], dict[str, int]]:
        value, gen = runtime.generate_json(threat_prompt(anomalies), THREAT_SCHEMA, system=SYSTEM_PROMPT,
                                           max_tokens=400)
        return value, gen.usage()

    return assess
