"""Research scout: new papers from arXiv's API (Atom) for the configured categories and keywords, scored
by a deterministic rule (keywords in the title and abstract, categories, recency), the top N not seen
before summarised by the local model. https://info.arxiv.org/help/api/user-manual.html
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from forge_dagster.core.ops.service_checks import error_text

FEED = "arxiv"  # the research_items feed papers are recorded under (seen once, whatever the query)
_ATOM = "{http://www.w3.org/2005/Atom}"
_ARXIV = "{http://arxiv.org/schemas/atom}"
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string", "maxLength": 600},
                   "relevance": {"type": "string", "maxLength": 300}},
    "required": ["summary", "relevance"],
    "additionalProperties": False,
}
SUMMARY_SYSTEM = ("You brief an engineering team that runs LLM workloads on its own GPU. Summarise the paper in "
                  "two sentences and say in one why it matters to them. Answer with JSON only.")


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    abstract: str
    published: str
    categories: tuple[str, ...]
    authors: tuple[str, ...]
    link: str | None
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def query_url(base: str, categories: Sequence[str], keywords: Sequence[str], max_results: int) -> str:
    """The API query: any of the categories, and any of the keywords (phrases quoted), newest first."""
    query = "(" + " OR ".join(f"cat:{c}" for c in categories) + ")"
    if keywords:
        terms = [f'all:"{k}"' if " " in k else f"all:{k}" for k in keywords]
        query += " AND (" + " OR ".join(terms) + ")"
    params = {"search_query": query, "start": 0, "max_results": max_results, "sortBy": "submittedDate",
              "sortOrder": "descending"}
    return f"{base}?{urlencode(params)}"


def _text(el: ET.Element, tag: str) -> str:
    found = el.find(tag)
    return " ".join((found.text or "").split()) if found is not None else ""


def parse_papers(data: bytes) -> list[Paper]:
    """The entries of an arXiv API answer (an Atom feed with arXiv's extensions)."""
    root = ET.fromstring(data)
    if root.tag != f"{_ATOM}feed":
        raise ValueError(f"not an Atom feed (root element {root.tag!r})")
    papers = []
    for e in root.findall(f"{_ATOM}entry"):
        ident = _text(e, f"{_ATOM}id")
        if not ident:
            continue
        if _text(e, f"{_ATOM}title") == "Error":  # the API reports a bad query as an entry titled Error
            raise ValueError(f"arXiv API error: {_text(e, f'{_ATOM}summary')[:200]}")
        primary = e.find(f"{_ARXIV}primary_category")
        cats = [primary.get("term")] if primary is not None else []
        cats += [c.get("term") for c in e.findall(f"{_ATOM}category") if c.get("term") not in cats]
        link = next((x.get("href") for x in e.findall(f"{_ATOM}link") if x.get("rel", "alternate") == "alternate"),
                    ident)
        papers.append(Paper(ident, _text(e, f"{_ATOM}title"), _text(e, f"{_ATOM}summary"),
                            _text(e, f"{_ATOM}published"), tuple(c for c in cats if c),
                            tuple(_text(a, f"{_ATOM}name") for a in e.findall(f"{_ATOM}author")), link))
    return papers


def score(paper: Paper, categories: Sequence[str], keywords: Sequence[str], now: datetime) -> float:
    """3 per keyword in the title, 1 per keyword in the abstract, 2 for a configured primary category and
    1 per other configured category, 1 for a paper of the last two days."""
    title, abstract = paper.title.lower(), paper.abstract.lower()
    points = 0.0
    for k in (k.lower() for k in keywords):
        pattern = re.compile(rf"\b{re.escape(k)}")
        points += 3 * bool(pattern.search(title)) + bool(pattern.search(abstract))
    for i, cat in enumerate(paper.categories):
        if cat in categories:
            points += 2 if i == 0 else 1
    try:
        if now - datetime.fromisoformat(paper.published.replace("Z", "+00:00")) <= timedelta(days=2):
            points += 1
    except ValueError:
        pass
    return points


def rank(papers: Sequence[Paper], categories: Sequence[str], keywords: Sequence[str], now: datetime) -> list[Paper]:
    """Papers with their scores, best first (ties: newest, then id, so the order is deterministic)."""
    scored = [Paper(**{**p.to_dict(), "score": score(p, categories, keywords, now)}) for p in papers]
    newest_first = sorted(scored, key=lambda p: (p.published, p.id), reverse=True)
    return sorted(newest_first, key=lambda p: -p.score)


def summarise(papers: Sequence[Paper], runtime) -> dict[str, Any]:
    """The model's summary of each paper (the caller holds the GPU mutex); a bad answer keeps the paper
    with its abstract alone."""
    out: dict[str, Any] = {"papers": [], "errors": [], "usage": {"input_tokens": 0, "output_tokens": 0}}
    model_down = False
    for p in papers:
        entry = p.to_dict()
        if not model_down:
            try:
                value, gen = runtime.generate_json(f"{p.title}\n\n{p.abstract}", SUMMARY_SCHEMA,
                                                   system=SUMMARY_SYSTEM, max_tokens=300)
                entry.update(summary=value["summary"], relevance=value.get("relevance"))
                for key, n in gen.usage().items():
                    out["usage"][key] = out["usage"].get(key, 0) + n
            except ValueError as exc:
                out["errors"].append(f"{p.id}: {error_text(exc)}")
            except Exception as exc:  # noqa: BLE001 - the model is gone; the papers stand
                out["error"] = error_text(exc)
                model_down = True
        out["papers"].append(entry)
    return out
