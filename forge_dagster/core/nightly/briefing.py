"""The morning briefing: what ran, what failed, what it cost and what was learned, as markdown; stored
per night and sent through the outbox (topic `briefing.ready`, key `briefing:<night>`) to Slack after
the night's last step. It is written from whatever the night recorded: steps that failed, were not
configured, or never ran are part of the news. A re-run whose level or failures differ from what Slack
was told posts a correction that replaces it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit

from forge_dagster.core.nightly import briefing_news

BRIEFING_TOPIC = "briefing.ready"


def briefing_key(night: str) -> str:
    """The outbox key (and idempotency key) of one night's briefing."""
    return f"briefing:{night}"


def feed_label(feed: str) -> str:
    """A short name for a feed: its host for a URL, its file name for a path."""
    parts = urlsplit(feed)
    return parts.netloc if parts.scheme in ("http", "https") else PurePath(parts.path or feed).name


def _out(steps: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return (steps.get(name) or {}).get("output") or {}


def _when(s: dict[str, Any]) -> str:
    at = s.get("recorded_at")
    return f"{at:%H:%M}" if hasattr(at, "strftime") else "?"


def _earlier(s: dict[str, Any], run_started: Any) -> bool:
    at = s.get("recorded_at")
    return run_started is not None and hasattr(at, "timestamp") and at.timestamp() < run_started


def _ran(steps: dict[str, dict[str, Any]], runs: Sequence[dict[str, Any]], outcomes: dict[str, Any],
         skips: dict[str, str], run_started: float | None, notices: Sequence[str]) -> list[str]:
    lines = []
    if steps:
        done = ", ".join(f"{name} ({_when(s)}{', an earlier run' if _earlier(s, run_started) else ''})"
                         for name, s in steps.items())
        lines.append(f"- Nightly steps: {done}")
    lines += [f"- Not run: `{name}`: {reason}" for name, reason in skips.items()]
    lines += [f"- Told Slack: {text.splitlines()[0]}" for text in notices]
    if runs:
        by_status = Counter(r["status"] for r in runs)
        jobs = Counter(r["job"] for r in runs)
        lines.append(f"- Dagster runs: {', '.join(f'{n} {s.lower()}' for s, n in sorted(by_status.items()))} "
                     f"({', '.join(f'{j} ×{n}' for j, n in jobs.most_common(6))})")
    states = Counter()
    for row in outcomes.get("by_state", []):
        states[row["state"]] += row["count"]
    if states:
        lines.append(f"- Forge jobs finished: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}; "
                     f"{outcomes.get('retries', 0)} retries")
    return lines or ["- Nothing ran."]


def _steps_failed(steps: dict[str, dict[str, Any]], expected: Sequence[str], skips: dict[str, str]) -> list[str]:
    lines = [f"- Step `{name}` did not run" for name in expected if name not in steps and name not in skips]
    lines += [f"- Step `{name}` failed: {_out(steps, name)['error']}" for name in steps if _out(steps, name).get("error")]
    kept = _out(steps, "knowledge_consolidation")
    if kept.get("errors"):
        lines.append(f"- Knowledge consolidation: {kept.get('unsummarised', 0)} findings kept without the model's "
                     f"summary ({'; '.join(kept['errors'][:3])})")
    return lines


def _failed(steps: dict[str, dict[str, Any]], runs: Sequence[dict[str, Any]], outcomes: dict[str, Any],
            expected: Sequence[str], skips: dict[str, str]) -> list[str]:
    lines = _steps_failed(steps, expected, skips)
    triage = _out(steps, "triage")
    for a in triage.get("anomalies", []):
        lines.append(f"- Health `{a['name']}` {a['status']}: {a['summary']}")
    assessment = triage.get("assessment") or {}
    if assessment.get("summary"):
        lines.append(f"- Local model's assessment ({assessment.get('threat', '?')}): {assessment['summary']}")
    elif assessment.get("error"):
        lines.append(f"- Local model's assessment could not be made: {assessment['error']}")
    for r in runs:
        if r["status"] == "FAILURE":
            lines.append(f"- Run `{r['job']}` failed ({r['run_id'][:8]})")
    for row in outcomes.get("top_failures", []):
        lines.append(f"- Jobs {row['state']} ×{row['count']}: {row['reason']}")
    for state, n in (outcomes.get("batches_ended_badly") or {}).items():
        lines.append(f"- Batches {state.removeprefix('ended_')}: {n}")
    for feed, error in (_out(steps, "research_scan").get("errors") or {}).items():
        lines.append(f"- Feed {feed_label(feed)}: {error}")
    return lines or ["- Nothing failed."]


def _cost(steps: dict[str, dict[str, Any]], outcomes: dict[str, Any]) -> list[str]:
    costs = outcomes.get("costs", [])
    total = sum(c["cost_usd"] for c in costs)
    local_in = sum((_out(steps, s).get("usage") or {}).get("input_tokens", 0) for s in steps)
    local_out = sum((_out(steps, s).get("usage") or {}).get("output_tokens", 0) for s in steps)
    lines = [f"- Provider spend: **${total:.4f}**; local model: {local_in} input / {local_out} output tokens "
             "(no charge)"]
    if costs:
        lines += ["", "| provider | model | jobs | input tokens | output tokens | cost |", "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {c['provider']} | {c['model']} | {c['jobs']} | {c['input_tokens']} | {c['output_tokens']} "
                  f"| ${c['cost_usd']:.4f} |" for c in costs]
    return lines


def _learned(steps: dict[str, dict[str, Any]], memories: Sequence[Any]) -> list[str]:
    lines = []
    scan = _out(steps, "research_scan")
    for item in scan.get("new_items", [])[:10]:
        link = f" — {item['link']}" if item.get("link") else ""
        lines.append(f"- New in {feed_label(item['feed'])}: {item['title']}{link}")
    if len(scan.get("new_items", [])) > 10:
        lines.append(f"- … and {len(scan['new_items']) - 10} more new items")
    lines += briefing_news.news(steps)
    if memories:
        lines.append(f"- {len(memories)} new memories: " + "; ".join(m.title for m in memories[:8]))
    return lines or ["- Nothing new."]


def render_briefing(night: str, steps: dict[str, dict[str, Any]], runs: Sequence[dict[str, Any]],
                    memories: Sequence[Any], *, expected: Sequence[str] = (), skips: dict[str, str] | None = None,
                    run_started: float | None = None, notices: Sequence[str] = ()) -> tuple[str, str]:
    """(level, markdown) of the night's briefing from its recorded steps, the steps skipped and why, the
    Dagster runs of the window ({job, status, run_id}) and the memories stored that night. A step that
    recorded an `error`, or one of `expected` that neither ran nor was skipped, is named under "What
    failed"; a step recorded before `run_started` (unix time) is marked as an earlier run's; `notices` are
    what the night already told Slack (waits, failed runs)."""
    skips = skips or {}
    triage = _out(steps, "triage")
    outcomes = _out(steps, "job_outcomes")
    level = triage.get("level", "UNKNOWN")
    sections = [
        [f"# Forge morning briefing — {night}", f"**Night status: {level}** (rule score {triage.get('score', '?')})"],
        ["## What ran", *_ran(steps, runs, outcomes, skips, run_started, notices)],
        ["## What failed", *_failed(steps, runs, outcomes, expected, skips)],
        ["## What it cost", *_cost(steps, outcomes)],
        ["## What was learned", *_learned(steps, memories)],
    ]
    return level, "\n\n".join(_join(section) for section in sections) + "\n"


def failed_lines(markdown: str) -> list[str]:
    """The briefing's "What failed" lines (empty when nothing failed)."""
    match = re.search(r"^## What failed\n\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S)
    lines = [line for line in (match.group(1).splitlines() if match else []) if line.startswith("- ")]
    return [] if lines == ["- Nothing failed."] else lines


def failures_digest(level: str, markdown: str) -> str:
    """What Slack must be told again if it changes: the level and what failed."""
    return hashlib.sha256("\n".join([level, *failed_lines(markdown)]).encode()).hexdigest()[:32]


def _join(section: list[str]) -> str:
    head, *body = section
    return head + "\n\n" + "\n".join(body) if body and head.startswith("#") else "\n\n".join(section)


def slack_text(markdown: str) -> str:
    """The briefing in Slack's mrkdwn: headings and **bold** as *bold*, table rows as bullet lines."""
    out = []
    for line in markdown.splitlines():
        if line.startswith("|---"):
            continue
        if line.startswith("#"):
            line = "*" + line.lstrip("#").strip() + "*"
        elif line.startswith("|"):
            line = "• " + " · ".join(cell.strip() for cell in line.strip("|").split("|"))
        out.append(re.sub(r"\*\*(.+?)\*\*", r"*\1*", line))
    return "\n".join(out)


def publish_briefing(repo, night: str, level: str, markdown: str) -> str | None:
    """Store the briefing; the first time for this night queue it for Slack (same transaction), and on a
    re-run whose level or failures changed queue a correction that replaces it. Returns "sent",
    "corrected" or None (stored, nothing new to tell)."""
    payload = {"title": f"Morning briefing {night}: {level}", "date": night, "night": night, "level": level,
               "summary": slack_text(markdown), "markdown": markdown}
    correction = {**payload, "correction": True,
                  "title": f"Correction: briefing {night} is now {level} (replaces the one sent earlier)"}
    return repo.send_briefing(night, level, markdown, failures_digest(level, markdown),
                              {"topic": BRIEFING_TOPIC, "key": briefing_key(night), "payload": payload},
                              {"topic": BRIEFING_TOPIC, "key": briefing_key(night), "payload": correction})
