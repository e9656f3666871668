"""The findings of the review, research and trend steps (their recorded outputs), for knowledge
consolidation: what each step noticed, with the evidence a memory keeps."""

from __future__ import annotations

from typing import Any

from forge_dagster.core.nightly.consolidation import Finding


def from_code_review(out: dict[str, Any]) -> list[Finding]:
    return [Finding(f"code:{r['repo']}", f"{f['severity']} in {f['file']}:{f['line']} ({r['sha']})",
                    f"{r['subject']}: {f['suggestion']}", ("code", "review", f["severity"]))
            for r in out.get("reviews", []) for f in r["findings"]]


def from_security_review(out: dict[str, Any]) -> list[Finding]:
    found = [Finding(f"security:{s['repo']}", f"{s['rule']} added in {s['file']}:{s['line']}",
                     f"commit {s['sha']}, value {s['match']}", ("security", "secret", s["rule"]))
             for s in out.get("secrets", [])]
    found += [Finding("security:dependencies", f"{p['package']}=={p['version']} affected by {p['advisory']['id']}",
                      f"{p['advisory']['summary']} (pinned in {p['file']}; fixed in "
                      f"{', '.join(p['advisory']['fixed']) or 'no release yet'})", ("security", "dependency"))
              for p in out.get("vulnerable_pins", [])]
    return found


def from_pr_digest(out: dict[str, Any], night: str) -> list[Finding]:
    return [Finding(f"branches:{r['repo']}", f"Branches of {r['repo']} on {night}", r["summary"],
                    ("branches",)) for r in out.get("repos", []) if r.get("summary")]


def from_research_scout(out: dict[str, Any]) -> list[Finding]:
    return [Finding("research:arxiv", p["title"],
                    " ".join(x for x in (p.get("link"), p.get("summary") or p["abstract"][:400]) if x),
                    ("research", "paper", *p["categories"][:2])) for p in out.get("papers", [])]


def from_ecosystem(out: dict[str, Any]) -> list[Finding]:
    found = []
    for u in out.get("updates", []):
        if u.get("yanked"):
            found.append(Finding("ecosystem", f"{u['package']}=={u['pinned']} yanked", u["yanked"],
                                 ("ecosystem", "yanked")))
        if u.get("new_releases"):
            found.append(Finding("ecosystem", f"{u['package']} {u['latest']} released",
                                 f"{u.get('what_changed') or ''} {u.get('changelog') or ''}".strip() or u["latest"],
                                 ("ecosystem", "release")))
    return found


def from_evolution(out: dict[str, Any], night: str) -> list[Finding]:
    return [Finding("evolution", f"{m['metric']} {m['direction']} in the week to {night}", m["text"],
                    ("evolution", m["metric"])) for m in out.get("moves", [])]


def night_findings(steps: dict[str, dict[str, Any]], night: str) -> list[Finding]:
    """The findings of every review, research and trend step that recorded an output for the night."""
    out = {name: (s.get("output") or {}) for name, s in steps.items()}
    return (from_code_review(out.get("code_review", {})) + from_security_review(out.get("security_review", {}))
            + from_pr_digest(out.get("pr_digest", {}), night) + from_research_scout(out.get("research_scout", {}))
            + from_ecosystem(out.get("ecosystem_watch", {})) + from_evolution(out.get("evolution", {}), night))
