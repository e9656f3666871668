"""Code review: the configured repositories' commits of the night's window, each diff cut into chunks
that fit the model's context, and one review per chunk in a JSON schema (findings with file, line,
severity and a suggestion). The schema names the chunk's files, so a finding always points at one.

A chunk whose answer is not the JSON asked for costs only that chunk's review; once the model stops
answering, the remaining chunks are reported as not reviewed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forge_dagster.core.nightly.gitlog import Change, FileDiff
from forge_dagster.core.ops.service_checks import error_text

SEVERITIES = ["info", "low", "medium", "high"]
REVIEW_SYSTEM = ("You review one change to a codebase. Report only real problems: bugs, missing error handling, "
                 "security issues, unclear code. For each, give the file, the line in the new file, a severity "
                 "and a concrete suggestion. An empty list is a fine answer. Answer with JSON only.")
CHARS_PER_TOKEN = 3  # conservative for code
PROMPT_RESERVE_TOKENS = 1200  # the system prompt, the header and the answer


def review_schema(files: Sequence[str]) -> dict[str, Any]:
    """The answer asked for one chunk: findings about the chunk's own files only."""
    finding = {
        "type": "object",
        "properties": {
            "file": {"type": "string", "enum": list(files)},
            "line": {"type": "integer", "minimum": 1},
            "severity": {"type": "string", "enum": SEVERITIES},
            "suggestion": {"type": "string", "maxLength": 400},
        },
        "required": ["file", "line", "severity", "suggestion"],
        "additionalProperties": False,
    }
    return {"type": "object", "properties": {"findings": {"type": "array", "items": finding, "maxItems": 10}},
            "required": ["findings"], "additionalProperties": False}


def chunk_budget(context_tokens: int) -> int:
    """How many characters of diff one prompt may carry for a model with `context_tokens`."""
    return max(1000, (context_tokens - PROMPT_RESERVE_TOKENS) * CHARS_PER_TOKEN)


def _pieces(diff: FileDiff, budget: int) -> list[tuple[str, str]]:
    """A file's patch as (path, text) pieces of at most `budget` characters, cut at line ends."""
    if len(diff.patch) <= budget:
        return [(diff.path, diff.patch)]
    pieces, current = [], ""
    for line in diff.patch.splitlines(keepends=True):
        if current and len(current) + len(line) > budget:
            pieces.append((diff.path, current))
            current = ""
        current += line[:budget]
    return pieces + ([(diff.path, current)] if current else [])


def chunks(change: Change, budget: int) -> list[tuple[list[str], str]]:
    """The change's diff as chunks of at most `budget` characters: small files packed together, a large
    file cut into several. Each chunk is (its files, its text)."""
    out: list[tuple[list[str], str]] = []
    files: list[str] = []
    text = ""
    for diff in change.files:
        for path, piece in _pieces(diff, budget):
            if text and len(text) + len(piece) > budget:
                out.append((files, text))
                files, text = [], ""
            if path not in files:
                files.append(path)
            text += piece
    return out + ([(files, text)] if text else [])


def _prompt(change: Change, part: int, total: int, text: str) -> str:
    return (f"Repository {change.repo}, commit {change.sha[:12]} by {change.author}: {change.subject}\n"
            f"Diff part {part} of {total}:\n{text}")


def review_changes(changes: Sequence[Change], runtime, *, context_tokens: int) -> dict[str, Any]:
    """Review every change chunk by chunk with the local model (the caller holds the GPU mutex)."""
    budget = chunk_budget(context_tokens)
    reviews, errors, usage = [], [], {"input_tokens": 0, "output_tokens": 0}
    model_down: str | None = None
    for change in changes:
        parts = chunks(change, budget)
        review = {**change.summary(), "chunks": len(parts), "findings": [], "reviewed_chunks": 0}
        for i, (files, text) in enumerate(parts, 1):
            if model_down:
                break
            try:
                value, gen = runtime.generate_json(_prompt(change, i, len(parts), text), review_schema(files),
                                                   system=REVIEW_SYSTEM, max_tokens=800)
            except ValueError as exc:  # not the JSON asked for: this chunk is not reviewed
                errors.append(f"{change.sha[:12]} part {i}: {error_text(exc)}")
                continue
            except Exception as exc:  # noqa: BLE001 - the model is gone: stop asking, say what was left
                model_down = error_text(exc)
                break
            for key, value_ in gen.usage().items():
                usage[key] = usage.get(key, 0) + value_
            review["reviewed_chunks"] += 1
            review["findings"] += [f for f in value.get("findings", []) if f.get("file") in files]
        reviews.append(review)
    return {"reviews": reviews, "changes": len(reviews), "findings": sum(len(r["findings"]) for r in reviews),
            "unreviewed_chunks": sum(r["chunks"] - r["reviewed_chunks"] for r in reviews), "errors": errors,
            "usage": usage, **({"error": model_down} if model_down else {})}
