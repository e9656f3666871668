"""Memories: findings kept in PostgreSQL, deduplicated by fingerprint and found by full-text search.

A memory written under the GPU mutex carries the lease's fence, and the store rejects it when another
holder has written since (`FencedOut`). `remember` checks the lease first as well, so a holder
that knows it lost the lock stops before touching the database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forge_dagster.core.nightly.gpu_mutex import Lease
    from forge_dagster.core.store.knowledge_store import KnowledgeRepository

_SPACES = re.compile(r"\s+")


def fingerprint(*parts: str) -> str:
    """A stable digest of the parts, insensitive to case and runs of whitespace."""
    normal = "\x1f".join(_SPACES.sub(" ", p).strip().lower() for p in parts)
    return hashlib.sha256(normal.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class NewMemory:
    """A memory to store. `fingerprint` defaults to one of (source, title, evidence)."""

    source: str
    title: str
    content: str
    tags: tuple[str, ...] = ()
    night: str | None = None
    fingerprint: str = ""

    def with_fingerprint(self) -> NewMemory:
        if self.fingerprint:
            return self
        return NewMemory(self.source, self.title, self.content, self.tags, self.night,
                         fingerprint(self.source, self.title, self.content))


@dataclass(frozen=True)
class Memory:
    """A stored memory; `rank` is the search rank (0 outside a search)."""

    id: int
    source: str
    title: str
    content: str
    tags: list[str] = field(default_factory=list)
    night: str | None = None
    fence: int | None = None
    compressed_into: int | None = None
    created_at: datetime | None = None
    rank: float = 0.0

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "title": self.title, "content": self.content,
                "tags": list(self.tags), "night": self.night, "fence": self.fence,
                "compressed_into": self.compressed_into,
                "created_at": self.created_at.isoformat() if self.created_at else None, "rank": self.rank}


def remember(repo: KnowledgeRepository, memories: list[NewMemory], lease: Lease | None = None) -> list[int]:
    """Store memories (duplicates dropped); under a lease, fenced by its token. Returns the new ids."""
    if lease is not None:
        lease.check()
        return repo.write_memories(memories, fence=lease.fencing)
    return repo.write_memories(memories)


def search(repo: KnowledgeRepository, query: str, *, limit: int = 10, tag: str | None = None,
           include_compressed: bool = False) -> list[Memory]:
    """Memories matching `query` (web-search syntax: words, "phrases", -exclusions, or), best first."""
    return repo.search(query, limit=limit, tag=tag, include_compressed=include_compressed)


def format_memory(memory: Memory, *, width: int = 240) -> str:
    """One memory as a few lines of plain text for the terminal."""
    when = memory.created_at.strftime("%Y-%m-%d %H:%M") if memory.created_at else "?"
    tags = f" [{', '.join(memory.tags)}]" if memory.tags else ""
    body = _SPACES.sub(" ", memory.content).strip()
    body = body if len(body) <= width else body[: width - 1] + "…"
    return f"#{memory.id} {when} {memory.source}{tags}\n  {memory.title}\n  {body}"
