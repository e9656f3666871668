"""Research scan: read the configured feeds (RSS 2.0, RSS 1.0/RDF, Atom, JSON Feed or a JSON list of
items), from files or http(s) URLs, and keep only the items never seen before.

A feed that cannot be read or parsed is reported with its error; the other feeds are still scanned.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_FEED_BYTES = 5 * 1024 * 1024
_ATOM = "{http://www.w3.org/2005/Atom}"
_RSS1 = "{http://purl.org/rss/1.0/}"


@dataclass(frozen=True)
class FeedItem:
    feed: str
    item_id: str
    title: str
    link: str | None = None
    published: str | None = None
    summary: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanReport:
    new_items: list[FeedItem] = field(default_factory=list)
    seen: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"new_items": [i.to_dict() for i in self.new_items], "seen": self.seen, "errors": self.errors}


def read_feed(source: str, *, timeout_s: float = 20.0) -> bytes:
    """The feed's bytes from an http(s) URL, a file:// URL or a path (at most 5 MB)."""
    scheme = urlsplit(source).scheme
    if scheme in ("http", "https"):
        with httpx.stream("GET", source, timeout=timeout_s, follow_redirects=True) as response:
            response.raise_for_status()
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > MAX_FEED_BYTES:
                    raise ValueError(f"feed larger than {MAX_FEED_BYTES} bytes")
            return data
    path = Path(urlsplit(source).path if scheme == "file" else source).expanduser()
    if path.stat().st_size > MAX_FEED_BYTES:
        raise ValueError(f"feed larger than {MAX_FEED_BYTES} bytes")
    return path.read_bytes()


def _clip(text: str | None, n: int = 500) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _item(feed: str, ident: str | None, title: str | None, link: str | None, published: str | None,
          summary: str | None) -> FeedItem | None:
    title = _clip(title, 300) or ""
    if not (ident or link or title):
        return None
    if not ident:
        ident = link or hashlib.sha256(f"{title}\x1f{published}".encode()).hexdigest()[:24]
    return FeedItem(feed, ident[:500], title or (link or ident), link, published, _clip(summary))


def _text(el: ET.Element | None, tag: str) -> str | None:
    found = None if el is None else el.find(tag)
    return None if found is None or found.text is None else found.text.strip()


def _parse_xml(feed: str, data: bytes) -> list[FeedItem]:
    root = ET.fromstring(data)
    items = []
    if root.tag == f"{_ATOM}feed":
        for e in root.findall(f"{_ATOM}entry"):
            link_el = next((x for x in e.findall(f"{_ATOM}link") if x.get("rel", "alternate") == "alternate"),
                           e.find(f"{_ATOM}link"))
            items.append(_item(feed, _text(e, f"{_ATOM}id"), _text(e, f"{_ATOM}title"),
                               None if link_el is None else link_el.get("href"),
                               _text(e, f"{_ATOM}updated") or _text(e, f"{_ATOM}published"),
                               _text(e, f"{_ATOM}summary") or _text(e, f"{_ATOM}content")))
    elif root.tag == "rss":
        for e in root.iter("item"):
            items.append(_item(feed, _text(e, "guid"), _text(e, "title"), _text(e, "link"), _text(e, "pubDate"),
                               _text(e, "description")))
    elif root.tag.endswith("RDF"):
        for e in root.iter(f"{_RSS1}item"):
            about = e.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about")
            items.append(_item(feed, about, _text(e, f"{_RSS1}title"), _text(e, f"{_RSS1}link"), None,
                               _text(e, f"{_RSS1}description")))
    else:
        raise ValueError(f"not an RSS or Atom feed (root element {root.tag!r})")
    return [i for i in items if i is not None]


def _parse_json(feed: str, data: bytes) -> list[FeedItem]:
    doc = json.loads(data)
    entries = doc.get("items") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError("a JSON feed is a JSON Feed object with `items` or a list of items")
    items = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        items.append(_item(feed, str(e["id"]) if e.get("id") is not None else None, e.get("title"),
                           e.get("url") or e.get("link"), e.get("date_published") or e.get("published"),
                           e.get("summary") or e.get("content_text") or e.get("description")))
    return [i for i in items if i is not None]


def parse_feed(feed: str, data: bytes) -> list[FeedItem]:
    """The items of one feed document, detected by content (JSON or XML), in document order."""
    if data.lstrip()[:1] in (b"{", b"["):
        return _parse_json(feed, data)
    return _parse_xml(feed, data)


def scan_feeds(sources: Sequence[str], repo, night: str) -> ScanReport:
    """Read every feed, record its items, and report those never seen before (plus per-feed errors)."""
    report = ScanReport()
    for source in sources:
        try:
            items = parse_feed(source, read_feed(source))
        except Exception as exc:  # noqa: BLE001 - one bad feed is reported, the others still scanned
            report.errors[source] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        unique = list({i.item_id: i for i in items}.values())
        new = repo.record_research_items([i.to_dict() for i in unique], night)
        report.new_items.extend(i for i in unique if (i.feed, i.item_id) in new)
        report.seen += len(unique) - sum(1 for i in unique if (i.feed, i.item_id) in new)
    return report


def example_feeds() -> list[str]:
    """The feeds that ship with Forge (examples/feeds/): read when none are configured."""
    folder = resources.files("forge_dagster") / "examples" / "feeds"
    return sorted(str(f) for f in folder.iterdir() if f.name.endswith((".xml", ".json")))
