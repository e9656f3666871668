"""Evolution: the night's numbers week over week. The seven nights ending tonight are compared with the
seven before: Forge's jobs, invalid rate and cost, the night's level, and what the review and research
steps found. A metric that moved by half or more (and by a meaningful amount) is a trend worth telling."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

LEVEL_SCORE = {"GREEN": 0, "AMBER": 1, "RED": 2}
# metric -> (step, how to read it from the step's output); rates are averaged, counts summed.
METRICS: dict[str, tuple[str, Any]] = {
    "jobs_finished": ("job_outcomes", lambda o: o.get("finished")),
    "invalid_rate": ("job_outcomes", lambda o: o.get("invalid_rate")),
    "cost_usd": ("job_outcomes", lambda o: o.get("cost_usd")),
    "night_level": ("triage", lambda o: LEVEL_SCORE.get(o.get("level"))),
    "review_findings": ("code_review", lambda o: o.get("findings")),
    "security_findings": ("security_review", lambda o: o.get("findings")),
    "new_papers": ("research_scout", lambda o: len(o.get("papers", []))),
    "new_articles": ("research_scan", lambda o: len(o.get("new_items", []))),
    "dependency_updates": ("ecosystem_watch", lambda o: len(o.get("updates", []))),
}
AVERAGED = {"invalid_rate", "night_level"}
STEPS = sorted({step for step, _ in METRICS.values()})
MIN_CHANGE = {"invalid_rate": 0.02, "cost_usd": 0.01, "night_level": 0.5}  # below this a move is noise


def weeks(night: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """((first, last) night of this week, (first, last) of the week before); this week ends tonight."""
    today = date.fromisoformat(night)
    return ((today - timedelta(days=6)).isoformat(), night), \
        ((today - timedelta(days=13)).isoformat(), (today - timedelta(days=7)).isoformat())


def _aggregate(rows: Sequence[tuple[str, str, dict[str, Any]]]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for _, step, output in rows:
        for metric, (source, read) in METRICS.items():
            if source == step and not output.get("error"):
                value = read(output)
                if value is not None:
                    values[metric].append(float(value))
    return {m: (sum(v) / len(v) if m in AVERAGED else sum(v)) for m, v in values.items() if v}


def trends(this_week: Sequence[tuple[str, str, dict[str, Any]]], last_week: Sequence[tuple[str, str, dict[str, Any]]]
           ) -> dict[str, Any]:
    """Each metric this week and last, its change, and the moves worth telling."""
    now, before = _aggregate(this_week), _aggregate(last_week)
    metrics, moves = {}, []
    for m in sorted(set(now) | set(before)):
        a, b = now.get(m, 0.0), before.get(m, 0.0)
        change = None if b == 0 else round((a - b) / b, 3)
        metrics[m] = {"this_week": round(a, 6), "last_week": round(b, 6), "change": change}
        if abs(a - b) >= MIN_CHANGE.get(m, 1) and (b == 0 or abs(a - b) / abs(b) >= 0.5):
            direction = "up" if a > b else "down"
            moves.append({"metric": m, "direction": direction, "this_week": round(a, 6), "last_week": round(b, 6),
                          "text": f"{m.replace('_', ' ')} {direction}: {b:g} -> {a:g} week over week"})
    return {"nights_this_week": len({n for n, _, _ in this_week}), "nights_last_week": len({n for n, _, _ in last_week}),
            "metrics": metrics, "moves": moves}
