"""Memories: findings kept in PostgreSQL, deduplicated by fingerprint and found by full-text search.

A memory written under the GPU mutex carries the lease's fence, and the store rejects it when another
holder has written since (`FencedOut`). `remember` checks the lease first as well, so a holder
that knows it lost the lock stops before touching the database.
"""

from __future__ import annotations

import re

from forge_dagster.core.nightly.gpu_mutex import Lease
from forge_dagster.core.store.knowledge_store import KnowledgeRepository
from forge_dagster.core.store.knowledge_types import Memory, NewMemory, fingerprint

__all__ = ["Memory", "NewMemory", "fingerprint", "remember", "search"]

_SPACES = re.compile(r"\s+")


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
