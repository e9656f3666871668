"""PR digest: per configured repository, the branches merged in the night's window and the branches
still open (commits not merged yet), summarised by the local model in a few sentences."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from forge_dagster.core.nightly.gitlog import GitError, branches
from forge_dagster.core.ops.service_checks import error_text

DIGEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 800},
        "attention": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 3},
    },
    "required": ["summary", "attention"],
    "additionalProperties": False,
}
DIGEST_SYSTEM = ("You write the morning digest of a repository's branches for its team: what was merged, what is "
                 "still open, and at most three things that need attention. Answer with JSON only.")


def collect(repos: Sequence[str], since: datetime) -> dict[str, Any]:
    """Merged and open branches per repository; a repository git cannot read is reported, not fatal."""
    found, errors = [], []
    for repo in repos:
        try:
            found.append({"repo": repo, "branches": [b.to_dict() for b in branches(repo, since)]})
        except GitError as exc:
            errors.append(error_text(exc))
    return {"repos": found, "errors": errors,
            "merged": sum(b["state"] == "merged" for r in found for b in r["branches"]),
            "open": sum(b["state"] == "open" for r in found for b in r["branches"])}


def summarise(collected: dict[str, Any], runtime) -> dict[str, Any]:
    """One summary per repository that has branches to tell about (the caller holds the GPU mutex)."""
    out = {**collected, "errors": list(collected["errors"]), "usage": {"input_tokens": 0, "output_tokens": 0}}
    for entry in out["repos"]:
        if not entry["branches"]:
            continue
        try:
            value, gen = runtime.generate_json(f"Repository {entry['repo']}:\n{json.dumps(entry['branches'])}",
                                               DIGEST_SCHEMA, system=DIGEST_SYSTEM, max_tokens=500)
        except ValueError as exc:
            out["errors"].append(f"{entry['repo']}: {error_text(exc)}")
            continue
        except Exception as exc:  # noqa: BLE001 - the model is gone; the branch lists stand
            out["error"] = error_text(exc)
            break
        for key, n in gen.usage().items():
            out["usage"][key] = out["usage"].get(key, 0) + n
        entry["summary"], entry["attention"] = value["summary"], value.get("attention", [])
    return out
