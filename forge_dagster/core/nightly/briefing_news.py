"""The briefing's lines for what the review, research and trend steps found (their recorded outputs)."""

from __future__ import annotations

from typing import Any


def _out(steps: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    return (steps.get(name) or {}).get("output") or {}


def code_review(steps: dict[str, dict[str, Any]]) -> list[str]:
    out = _out(steps, "code_review")
    if not out.get("reviews"):
        return []
    lines = [f"- Code review: {out['changes']} changes, {out['findings']} findings"
             + (f", {out['unreviewed_chunks']} chunks not reviewed" if out.get("unreviewed_chunks") else "")]
    worst = sorted((f | {"sha": r["sha"], "repo": r["repo"]} for r in out["reviews"] for f in r["findings"]),
                   key=lambda f: ["high", "medium", "low", "info"].index(f.get("severity", "info")))
    lines += [f"  - {f['severity']}: `{f['file']}:{f['line']}` ({f['sha']}) {f['suggestion'][:160]}" for f in worst[:5]]
    return lines


def security_review(steps: dict[str, dict[str, Any]]) -> list[str]:
    out = _out(steps, "security_review")
    if "findings" not in out:
        return []
    lines = [f"- Security review: {out['findings']} findings ({len(out.get('secrets', []))} secrets, "
             f"{len(out.get('vulnerable_pins', []))} vulnerable pins of {out.get('pins_checked', 0)} checked"
             + ("" if out.get("advisories") is not None else "; no advisory database configured") + ")"]
    lines += [f"  - {s['rule']} in `{s['file']}:{s['line']}` ({s['sha']}): {s['match']}" for s in out.get("secrets", [])[:5]]
    lines += [f"  - {p['package']}=={p['version']}: {p['advisory']['id']} {p['advisory']['summary'][:120]}"
              for p in out.get("vulnerable_pins", [])[:5]]
    return lines


def pr_digest(steps: dict[str, dict[str, Any]]) -> list[str]:
    out = _out(steps, "pr_digest")
    if "repos" not in out:
        return []
    lines = [f"- Branches: {out.get('merged', 0)} merged, {out.get('open', 0)} open"]
    lines += [f"  - {r['repo']}: {r['summary'][:300]}" for r in out["repos"] if r.get("summary")]
    return lines


def research_scout(steps: dict[str, dict[str, Any]]) -> list[str]:
    out = _out(steps, "research_scout")
    return [f"- Paper (score {p['score']:g}): {p['title']} — {p['link']}" for p in out.get("papers", [])[:5]]


def ecosystem(steps: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for u in _out(steps, "ecosystem_watch").get("updates", [])[:8]:
        if u.get("yanked"):
            lines.append(f"- {u['package']}=={u['pinned']} was yanked: {u['yanked']}")
        if u.get("new_releases"):
            what = f" — {u['what_changed'].splitlines()[0][:160]}" if u.get("what_changed") else ""
            lines.append(f"- {u['package']} {u['latest']} is out (you have {u['pinned'] or u['spec'] or 'any'}){what}")
    return lines


def evolution(steps: dict[str, dict[str, Any]]) -> list[str]:
    return [f"- Trend: {m['text']}" for m in _out(steps, "evolution").get("moves", [])[:6]]


def atlas(steps: dict[str, dict[str, Any]]) -> list[str]:
    out = _out(steps, "atlas")
    return [f"- Atlas rebuilt: {out['topics']} topics, {out['memories']} memories at {out['path']}"] if out.get("path") else []


def news(steps: dict[str, dict[str, Any]]) -> list[str]:
    """Every step's news, in the chain's order."""
    return (code_review(steps) + security_review(steps) + pr_digest(steps) + research_scout(steps)
            + ecosystem(steps) + evolution(steps) + atlas(steps))
