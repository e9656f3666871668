"""Advisories in OSV's JSON format (https://ossf.github.io/osv-schema/), from a file or URL: a list of
records, `{"vulns": [...]}` (the query API's answer) or one record; and the pins they affect (PyPI
ecosystem: `versions` listed, or ECOSYSTEM ranges of introduced / fixed / last_affected events)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from forge_dagster.core.nightly.research import read_feed


@dataclass(frozen=True)
class Advisory:
    """One advisory about one package."""

    id: str
    package: str
    summary: str
    aliases: tuple[str, ...]
    affected: dict[str, Any]  # the OSV `affected` entry for the package
    fixed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "package": self.package, "summary": self.summary, "aliases": list(self.aliases),
                "fixed": list(self.fixed)}


def load_advisories(source: str) -> list[Advisory]:
    """The PyPI advisories of an OSV JSON document (a file, a file:// or an http(s) URL)."""
    doc = json.loads(read_feed(source))
    records = doc.get("vulns", [doc] if "id" in doc else []) if isinstance(doc, dict) else doc
    out = []
    for rec in records:
        for aff in rec.get("affected", []):
            pkg = aff.get("package") or {}
            if str(pkg.get("ecosystem", "")).lower() != "pypi" or not pkg.get("name"):
                continue
            fixed = tuple(e["fixed"] for r in aff.get("ranges", []) for e in r.get("events", []) if "fixed" in e)
            out.append(Advisory(rec["id"], canonicalize_name(pkg["name"]),
                                rec.get("summary") or rec.get("details", "")[:200], tuple(rec.get("aliases", [])),
                                aff, fixed))
    return out


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, events: Iterable[dict[str, str]]) -> bool:
    """Whether `version` falls in an OSV range: events sorted by version, introduced opens, fixed or
    last_affected closes (fixed exclusive, last_affected inclusive)."""
    affected = False
    points = []
    for event in events:
        for kind, value in event.items():
            v = Version("0") if value == "0" else _version(value)
            if v is not None:
                points.append((v, kind))
    for v, kind in sorted(points, key=lambda p: p[0]):
        if kind == "introduced" and version >= v:
            affected = True
        elif kind == "fixed" and version >= v:
            affected = False
        elif kind == "last_affected" and version > v:
            affected = False
    return affected


def affects(advisory: Advisory, version: str) -> bool:
    """Whether the pinned `version` is affected by `advisory`."""
    if version in advisory.affected.get("versions", []):
        return True
    v = _version(version)
    if v is None:
        return False
    return any(_in_range(v, r.get("events", [])) for r in advisory.affected.get("ranges", [])
               if r.get("type") in ("ECOSYSTEM", "SEMVER"))


def vulnerable_pins(pins: Iterable[dict[str, str]], advisories: list[Advisory]) -> list[dict[str, Any]]:
    """The pins ({package, version, file}) an advisory affects, each with the advisory."""
    by_package: dict[str, list[Advisory]] = {}
    for adv in advisories:
        by_package.setdefault(adv.package, []).append(adv)
    return [{**pin, "advisory": adv.to_dict()} for pin in pins
            for adv in by_package.get(canonicalize_name(pin["package"]), []) if affects(adv, pin["version"])]
