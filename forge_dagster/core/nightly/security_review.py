"""Security review: deterministic rules first, the model only for what survives them.

The rules: secrets in the lines the night's commits added (cloud and API keys, private keys, tokens,
webhooks, passwords assigned in code), placeholders and lines marked `forge: allow-secret` dropped; and
the repositories' exact dependency pins checked against an advisory database in OSV's JSON format when
one is configured. The survivors (a secret is shown to the model redacted, never in clear) go to the local
model one by one for a severity and an action; its answer is advice, the rules' finding stands.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from forge_dagster.core.nightly.dependencies import project_dependencies
from forge_dagster.core.nightly.gitlog import Change
from forge_dagster.core.nightly.osv import Advisory, vulnerable_pins
from forge_dagster.core.ops.service_checks import error_text

SECRET_RULES: dict[str, re.Pattern[str]] = {
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private_key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP )?PRIVATE KEY( BLOCK)?-----"),
    "github_token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "anthropic_key": re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    "openai_key": re.compile(r"\bsk-(?!ant-)(?:proj-)?[A-Za-z0-9_-]{20,}"),
    "slack_webhook": re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"),
    "password_assignment": re.compile(r"(?i)\b(?:password|passwd|secret|api_key|token)\s*[:=]\s*['\"]([^'\"\s]{8,})['\"]"),
}
PLACEHOLDERS = re.compile(r"(?i)(example|placeholder|changeme|dummy|your[_-]|xxxx|\*\*\*|<[^>]+>|\$\{)")
ALLOW_MARK = "forge: allow-secret"
ASSESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "explanation": {"type": "string", "maxLength": 500},
        "action": {"type": "string", "maxLength": 300},
    },
    "required": ["severity", "explanation", "action"],
    "additionalProperties": False,
}
ASSESS_SYSTEM = ("You are a security reviewer. A deterministic rule flagged the finding below. Say how severe "
                 "it is, why, and the one action to take. Answer with JSON only.")


def redact(text: str) -> str:
    """A secret as shown anywhere: its first four characters and its length."""
    return f"{text[:4]}… ({len(text)} chars)"


def secrets_in(changes: Sequence[Change]) -> tuple[list[dict[str, Any]], int]:
    """Secrets in the added lines of `changes` ({rule, repo, sha, file, line, match}, redacted), and how
    many matches were dropped as placeholders or allowed."""
    found, dropped = [], 0
    for change in changes:
        for diff in change.files:
            for line_no, text in diff.added:
                for rule, pattern in SECRET_RULES.items():
                    for m in pattern.finditer(text):
                        value = m.group(m.lastindex or 0)
                        if ALLOW_MARK in text or PLACEHOLDERS.search(value):
                            dropped += 1
                            continue
                        found.append({"rule": rule, "repo": change.repo, "sha": change.sha[:12], "file": diff.path,
                                      "line": line_no, "match": redact(value)})
    return found, dropped


def repo_pins(repos: Sequence[str]) -> list[dict[str, str]]:
    """The exact pins ({package, version, file}) the repositories declare at their working tree."""
    return [{"package": d.name, "version": d.pinned, "file": d.file}
            for repo in repos for d in project_dependencies(repo) if d.pinned]


def rule_findings(changes: Sequence[Change], repos: Sequence[str], advisories: list[Advisory] | None
                  ) -> dict[str, Any]:
    """What the rules alone find: secrets in the day's diffs; vulnerable pins when advisories are given."""
    secrets, dropped = secrets_in(changes)
    pins = repo_pins(repos) if advisories is not None else []
    vulnerable = vulnerable_pins(pins, advisories) if advisories else []
    return {"secrets": secrets, "vulnerable_pins": vulnerable, "dropped": dropped, "pins_checked": len(pins),
            "advisories": None if advisories is None else len(advisories),
            "findings": len(secrets) + len(vulnerable)}


def _describe(kind: str, f: dict[str, Any]) -> str:
    if kind == "secret":
        return (f"A {f['rule']} was added in {f['repo']} commit {f['sha']}, file {f['file']} line {f['line']} "
                f"(value redacted: {f['match']}).")
    adv = f["advisory"]
    return (f"{f['package']}=={f['version']} is pinned in {f['file']}; advisory {adv['id']}: {adv['summary']}. "
            f"Fixed in: {', '.join(adv['fixed']) or 'no fixed version'}.")


def assess(rules: dict[str, Any], runtime, *, limit: int = 20) -> dict[str, Any]:
    """The rules' findings with the model's assessment of each (the caller holds the GPU mutex)."""
    out = {**rules, "assessments": [], "errors": [], "usage": {"input_tokens": 0, "output_tokens": 0}}
    items = [("secret", f) for f in rules["secrets"]] + [("pin", f) for f in rules["vulnerable_pins"]]
    for kind, finding in items[:limit]:
        try:
            value, gen = runtime.generate_json(_describe(kind, finding), ASSESS_SCHEMA, system=ASSESS_SYSTEM,
                                               max_tokens=300)
        except ValueError as exc:
            out["errors"].append(error_text(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - the model is gone; the rules' findings stand
            out["error"] = error_text(exc)
            break
        for key, n in gen.usage().items():
            out["usage"][key] = out["usage"].get(key, 0) + n
        out["assessments"].append({"finding": _describe(kind, finding), **value})
    return out
