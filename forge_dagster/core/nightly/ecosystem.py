"""Ecosystem watch: the configured projects' dependencies against the PyPI JSON API
(https://docs.pypi.org/api/json/): a pinned version that was yanked (with the reason), releases newer
than the pin or new in the window, and what changed (the release's notes from its description, the
changelog link). No model is needed: every fact comes from PyPI."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from forge_dagster.core.nightly.dependencies import Dependency
from forge_dagster.core.ops.service_checks import error_text

CHANGELOG_KEYS = ("changelog", "change log", "changes", "release notes", "history", "what's new")


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _uploaded(files: list[dict[str, Any]]) -> datetime | None:
    times = [f.get("upload_time_iso_8601") for f in files if f.get("upload_time_iso_8601")]
    return min((datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times), default=None)


def release_notes(description: str, version: str, *, lines: int = 8) -> str | None:
    """The lines under the first heading or line that names `version` in a project description."""
    text = description.splitlines()
    pattern = re.compile(rf"(^|[^\d.]){re.escape(version)}($|[^\d])")
    for i, line in enumerate(text):
        if pattern.search(line):
            body = [t for t in text[i + 1:i + 1 + lines * 2] if t.strip() and not set(t.strip()) <= set("=-~#*")]
            return "\n".join(body[:lines]) or None
    return None


def changelog_url(info: dict[str, Any]) -> str | None:
    for key, url in (info.get("project_urls") or {}).items():
        if any(k in key.lower() for k in CHANGELOG_KEYS):
            return url
    return None


def examine(dep: Dependency, doc: dict[str, Any], since: datetime) -> dict[str, Any] | None:
    """What PyPI's answer for `dep` says that needs telling, or None when nothing does."""
    info, releases = doc.get("info") or {}, doc.get("releases") or {}
    latest = info.get("version")
    notes: dict[str, Any] = {"package": dep.name, "spec": dep.spec, "pinned": dep.pinned, "file": dep.file,
                             "latest": latest}
    if dep.pinned and dep.pinned in releases:
        files = releases[dep.pinned]
        if files and all(f.get("yanked") for f in files):
            notes["yanked"] = next((f.get("yanked_reason") for f in files if f.get("yanked_reason")), "") or "no reason given"
    floor = _version(dep.pinned) if dep.pinned else None
    newer = []
    for ver, files in releases.items():
        v, uploaded = _version(ver), _uploaded(files)
        if v is None or v.is_prerelease or not files or all(f.get("yanked") for f in files):
            continue
        if (floor is not None and v > floor) or (floor is None and uploaded is not None and uploaded >= since):
            newer.append((v, ver, uploaded))
    newer.sort()
    if newer:
        notes["new_releases"] = [{"version": ver, "uploaded": up.isoformat() if up else None,
                                  "in_window": bool(up and up >= since)} for _, ver, up in newer[-10:]]
        try:
            notes["allowed_by_spec"] = bool(latest) and Version(latest) in SpecifierSet(dep.spec)
        except (InvalidSpecifier, InvalidVersion):
            pass
        notes["what_changed"] = release_notes(info.get("description") or "", latest or "") or info.get("summary")
        notes["changelog"] = changelog_url(info)
    return notes if ("yanked" in notes or newer) else None


def watch(dependencies: Sequence[Dependency], pypi_url: str, since: datetime, *, timeout_s: float = 20.0
          ) -> dict[str, Any]:
    """Ask PyPI about every dependency (once per package and file); a package PyPI does not answer for is
    reported with its error, the others still checked."""
    updates, errors, checked = [], {}, 0
    with httpx.Client(timeout=timeout_s, follow_redirects=True, headers={"User-Agent": "forge-nightly/1"}) as client:
        docs: dict[str, dict[str, Any]] = {}
        for dep in dependencies:
            if dep.name in errors:
                continue
            if dep.name not in docs:
                try:
                    response = client.get(f"{pypi_url.rstrip('/')}/{dep.name}/json")
                    response.raise_for_status()
                    docs[dep.name] = response.json()
                except (httpx.HTTPError, ValueError) as exc:
                    errors[dep.name] = error_text(exc)
                    continue
            checked += 1
            found = examine(dep, docs[dep.name], since)
            if found is not None:
                updates.append(found)
    return {"checked": checked, "updates": updates, "yanked": sum("yanked" in u for u in updates),
            "errors": errors}
