"""Plain types the store's repositories hand out and take back: a claimed job and its lease, outbox
messages and rows, what a sweep did, a pacing slot, and the worker names leases are held under."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class LeaseLost(Exception):
    """The job's lease was taken over (or it already finished): this worker must stop working on it."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds a lease on. `state` is the leased state the fence checks. `lease_lost` is
    set when a heartbeat finds the lease taken over: whoever works on the job must stop."""

    id: int
    external_id: str | None
    processor: str
    processor_version: str | None
    mode: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    lease_token: uuid.UUID
    lease_expires_at: datetime
    callback_url: str | None
    state: str
    lease_lost: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


@dataclass(frozen=True)
class OutboxMessage:
    topic: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    key: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Grant:
    """Slots taken from a key's shared pacing schedule: the first one's time, `step` seconds between the
    next ones (`slots` in all) and the schedule's time when they were taken (epoch seconds on the
    schedule's clock), the key's limits and generation as shared, and its times as the block left them."""

    admit_at: float
    now: float
    rpm: int | None
    tpm: int | None
    generation: int
    slots: int = 1
    step: float = 0.0
    tat_r: float | None = None
    tat_t: float | None = None

    def times(self) -> list[float]:
        """Every slot's time, in order."""
        return [self.admit_at + i * self.step for i in range(self.slots)]


@dataclass(frozen=True)
class SweepReport:
    requeued: int
    dead: int


def default_owner() -> str:
    """A worker name that says where it runs: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
