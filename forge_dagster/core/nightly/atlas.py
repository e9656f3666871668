"""The atlas: a browsable markdown map of the memories by topic (their tags and source families), rebuilt
weekly into `<atlas dir>/<ISO week>/` with `index.md` and one page per topic; `current` is a relative link
to the newest build, swapped atomically (rename), so a reader never finds it half written."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

IGNORED_TAGS = frozenset({"unsummarised", "weekly"})


def week_of(night: str) -> str:
    iso = date.fromisoformat(night).isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def due(night: str, weekday: int) -> str | None:
    """None when the atlas is rebuilt tonight (its weekday); else why not."""
    if date.fromisoformat(night).weekday() != weekday:
        names = ["Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays", "Sundays"]
        return f"rebuilt weekly, on {names[weekday]} (FORGE_NIGHTLY_ATLAS_WEEKDAY)"
    return None


def slug(topic: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", topic.lower()).strip("-") or "topic"


def topics(memories: Sequence[Any]) -> dict[str, list[Any]]:
    """Memories by topic: each of its tags (bookkeeping tags aside) and its source family."""
    found: dict[str, list[Any]] = defaultdict(list)
    for m in memories:
        names = {m.source.split(":")[0]} | {t for t in m.tags if t not in IGNORED_TAGS}
        for name in names:
            found[name].append(m)
    return dict(sorted(found.items()))


def _entry(m: Any) -> str:
    when = m.created_at.strftime("%Y-%m-%d") if getattr(m, "created_at", None) else "?"
    body = " ".join(m.content.split())
    return f"### {m.title}\n\n_{when} · {m.source} · #{m.id}_\n\n{body[:600]}{'…' if len(body) > 600 else ''}\n"


def render(memories: Sequence[Any], week: str) -> dict[str, str]:
    """{relative path: markdown}: the index and one page per topic."""
    by_topic = topics(memories)
    index = [f"# Forge atlas — {week}", "", f"{len(memories)} memories in {len(by_topic)} topics.", "",
             "| topic | memories | newest |", "|---|---:|---|"]
    pages = {}
    for name, ms in by_topic.items():
        page = f"topics/{slug(name)}.md"
        index.append(f"| [{name}]({page}) | {len(ms)} | {ms[0].title[:80]} |")
        pages[page] = f"# {name}\n\n[← atlas](../index.md)\n\n" + "\n".join(_entry(m) for m in ms)
    return {"index.md": "\n".join(index) + "\n", **pages}


def write(files: dict[str, str], folder: Path, week: str) -> Path:
    """Write the build to `folder/<week>/` and point `folder/current` at it (atomic rename of a link)."""
    build = folder / week
    for rel, text in files.items():
        target = build / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    link = folder / f".current-{os.getpid()}"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(week)
    os.replace(link, folder / "current")
    return build
