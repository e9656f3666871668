"""Knowledge consolidation: the night's findings (triage, research, Forge's own job outcomes) summarised
by the local model and stored as memories; and the weekly compression of a week's memories.

Findings are deduplicated before the model is asked anything: a finding whose fingerprint is already
stored costs no GPU time. Summaries are written in one fenced transaction under the caller's GPU lease.
A finding the model could not summarise (an answer that is not the JSON asked for, Ollama gone) is kept
with its evidence alone, tagged `unsummarised`, and reported: the night's knowledge is not lost with it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from forge_dagster.core.nightly.knowledge import NewMemory, fingerprint, remember
from forge_dagster.core.ops.service_checks import error_text

SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string", "maxLength": 800}},
    "required": ["summary"],
    "additionalProperties": False,
}
SUMMARY_SYSTEM = ("You keep the long-term memory of an engineering team. Summarise the finding in at most "
                  "three sentences: what happened and why it matters. Answer with JSON only.")
DIGEST_SYSTEM = ("You compress a week of an engineering team's memories into one digest: the recurring "
                 "themes, what changed, what still needs attention. Answer with JSON only.")


@dataclass(frozen=True)
class Finding:
    """Something the night noticed. The fingerprint covers source, title and evidence."""

    source: str
    title: str
    evidence: str
    tags: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.source, self.title, self.evidence)


@dataclass
class ConsolidationReport:
    findings: int = 0
    duplicates: int = 0
    stored: list[int] = field(default_factory=list)
    unsummarised: int = 0  # kept with their evidence alone: the model could not summarise them
    errors: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})

    def to_dict(self) -> dict[str, Any]:
        return {"findings": self.findings, "duplicates": self.duplicates, "stored": self.stored,
                "unsummarised": self.unsummarised, "errors": self.errors, "usage": self.usage}


def findings_from_triage(triage: dict[str, Any]) -> list[Finding]:
    """One finding per check that did not pass, with the model's assessment when there was one."""
    assessment = triage.get("assessment") or {}
    advice = f" Assessment ({assessment.get('threat', '?')}): {assessment['summary']}" if "summary" in assessment else ""
    return [Finding("health", f"{a['name']} check {a['status']}", f"{a['summary']}.{advice}",
                    ("health", a["name"], a["status"])) for a in triage.get("anomalies", [])]


def findings_from_research(scan: dict[str, Any]) -> list[Finding]:
    """One finding per new feed item."""
    return [Finding(f"research:{i['feed']}", i["title"],
                    " ".join(x for x in (i.get("link"), i.get("summary")) if x) or i["title"], ("research",))
            for i in scan.get("new_items", [])]


def findings_from_outcomes(outcomes: dict[str, Any], night: str) -> list[Finding]:
    """The night's totals and costs, and one finding per recurring failure reason (the same reason on
    another night has the same fingerprint, so it is remembered once)."""
    by_state: dict[str, int] = defaultdict(int)
    for row in outcomes.get("by_state", []):
        by_state[row["state"]] += row["count"]
    cost = sum(c["cost_usd"] for c in outcomes.get("costs", []))
    found = []
    if by_state or cost:
        totals = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
        found.append(Finding("forge:jobs", f"Forge jobs on {night}",
                             f"{totals or 'no jobs finished'}; {outcomes.get('retries', 0)} retries; "
                             f"cost ${cost:.4f}", ("jobs", "cost")))
    for row in outcomes.get("top_failures", []):
        found.append(Finding("forge:failures", f"Jobs {row['state']}: {row['reason'][:120]}", row["reason"],
                             ("jobs", "failure", row["state"])))
    return found


def fresh_findings(findings: Sequence[Finding], repo) -> tuple[list[Finding], int]:
    """Findings not yet remembered (duplicates within the list dropped too), and how many were dropped."""
    unique = list({f.fingerprint: f for f in findings}.values())
    known = repo.known_fingerprints([f.fingerprint for f in unique]) if unique else set()
    fresh = [f for f in unique if f.fingerprint not in known]
    return fresh, len(findings) - len(fresh)


def _add_usage(total: dict[str, int], usage: dict[str, int]) -> None:
    for key, value in usage.items():
        total[key] = total.get(key, 0) + int(value)


def finding_memory(f: Finding, night: str, summary: str | None) -> NewMemory:
    """The memory kept for a finding: the model's summary and the evidence, or the evidence alone."""
    if summary is None:
        return NewMemory(f.source, f.title, f"Evidence: {f.evidence}", (*f.tags, "unsummarised"), night,
                         f.fingerprint)
    return NewMemory(f.source, f.title, f"{summary}\n\nEvidence: {f.evidence}", f.tags, night, f.fingerprint)


def _summary(f: Finding, runtime, report: ConsolidationReport) -> str:
    value, gen = runtime.generate_json(f"Finding from {f.source}: {f.title}\n{f.evidence}", SUMMARY_SCHEMA,
                                       system=SUMMARY_SYSTEM, max_tokens=300)
    _add_usage(report.usage, gen.usage())
    summary = value.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError(f"the local model's answer has no summary: {str(value)[:120]!r}")
    return summary


def store_findings(findings: Sequence[Finding], repo, runtime, lease, night: str,
                   report: ConsolidationReport) -> ConsolidationReport:
    """Summarise each finding with the local model and store them all in one fenced write. A bad answer
    costs only its finding's summary; once the model stops answering, the rest are kept unsummarised."""
    memories, model_down = [], False
    for f in findings:
        summary = None
        if not model_down:
            try:
                summary = _summary(f, runtime, report)
            except ValueError as exc:  # not the JSON asked for
                report.errors.append(f"{f.title[:80]}: {error_text(exc)}")
            except Exception as exc:  # noqa: BLE001 - Ollama down: keep the findings without asking again
                report.errors.append(error_text(exc))
                model_down = True
        report.unsummarised += summary is None
        memories.append(finding_memory(f, night, summary))
    report.stored = remember(repo, memories, lease)
    report.duplicates += len(memories) - len(report.stored)
    return report


def store_unsummarised(findings: Sequence[Finding], repo, night: str, report: ConsolidationReport
                       ) -> ConsolidationReport:
    """Keep findings with their evidence alone, unfenced: the GPU lock was not had (or was lost before the
    fenced write, which is all or nothing), so nothing the model made is written."""
    stored = remember(repo, [finding_memory(f, night, None) for f in findings])
    if stored:
        report.stored, report.unsummarised = stored, len(stored)
    return report


def week_groups(repo, since: datetime) -> dict[str, list]:
    """The week's unfolded memories grouped by source family (health, research, forge), two or more each."""
    groups: dict[str, list] = defaultdict(list)
    for m in repo.memories_to_compress(since):
        groups[m.source.split(":")[0]].append(m)
    return {family: ms for family, ms in sorted(groups.items()) if len(ms) >= 2}


def compress_week(groups: dict[str, list], repo, runtime, lease, week: str) -> dict[str, Any]:
    """Fold each group into one digest memory written under the lease; the originals point to it."""
    digests, folded, usage = [], 0, {"input_tokens": 0, "output_tokens": 0}
    for family, memories in groups.items():
        listing = [{"title": m.title, "content": m.content[:600]} for m in memories]
        value, gen = runtime.generate_json(f"Memories of week {week} from {family}:\n{json.dumps(listing)}",
                                           SUMMARY_SCHEMA, system=DIGEST_SYSTEM, max_tokens=500)
        _add_usage(usage, gen.usage())
        titles = "\n".join(f"- {m.title}" for m in memories)
        ids = [m.id for m in memories]
        digest = NewMemory(f"weekly:{family}", f"Week {week}: {family} ({len(memories)} memories)",
                           f"{value['summary']}\n\nFolded:\n{titles}", ("weekly", family), None,
                           fingerprint("weekly", week, family, ",".join(map(str, ids))))
        lease.check()
        digest_id = repo.write_digest(digest, ids, fence=lease.fencing)
        if digest_id is not None:
            digests.append(digest_id)
            folded += len(ids)
    return {"digests": digests, "folded": folded, "groups": sorted(groups), "usage": usage}
