"""Handlers for the shutdown tests: steps that wait for the test to let them finish."""

from __future__ import annotations

import time
from pathlib import Path


def gated(job):
    """Finish once the file named by the job's `gate` exists (at most a minute): the test holds the job in
    flight as long as it needs."""
    gate, deadline = Path(job.payload["gate"]), time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"finished": gate.exists()}
