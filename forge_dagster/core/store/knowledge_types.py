"""Types the knowledge tables take and hand out: memories, and the fence a write under the GPU mutex
carries (the store refuses a stale one with FencedOut)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime


class LockLost(Exception):
    """The lease ran out or was taken over: the holder must stop writing results."""


class FencedOut(LockLost):
    """The store refused a write: a later holder of the lock has already written with a higher fence."""


@dataclass(frozen=True)
class Fence:
    """What a write under the lock carries: the guarded resource, the fencing number, and a digest of the
    holder's lock token (so the store can tell two writes of one holder from two holders; the token
    itself, which could release the lock, never leaves the process)."""

    resource: str
    number: int
    holder: str


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
