"""What an operator reads of batches: a list (age, request and job counts, cost) and one batch's story
(its status history, the provider's counts, its jobs by outcome, files, cost and the operator's actions).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from forge_dagster.core.batch.cancel import find_batch
from forge_dagster.core.ops.operator import OperatorError
from forge_dagster.core.store import ForgeStore

BATCH_STATES = ("building", "submitting", "in_progress", "cancelling", "ended_completed", "ended_expired",
                "ended_cancelled", "ended_failed", "collected", "archived")


def _plain(value: Any) -> Any:
    """`value` with timestamps as ISO text and decimals as floats (JSON as printed)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def list_batches(store: ForgeStore, *, states: list[str] | None = None, provider: str | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
    """Batches newest first, each with its age, request count, the provider's counts, its jobs by state and
    its booked cost. Raises OperatorError for a state that is not a batch state."""
    bad = [s for s in states or () if s not in BATCH_STATES]
    if bad:
        raise OperatorError(f"no batch state {', '.join(bad)} (states: {', '.join(BATCH_STATES)})")
    rows = store.batches.page(states=states, provider=provider, limit=limit)
    return [_plain({**row, "age_s": round(row["age_s"], 1)}) for row in rows]


def _history(batch: dict[str, Any], actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batch's status history, oldest first, from its row's timestamps and the operator's actions."""
    ended = batch["state"] if batch["state"].startswith("ended_") else "ended"
    marks = [("created_at", "submitting", None), ("submitted_at", "in_progress", None),
             ("ended_at", ended, f"provider status: {batch.get('raw_status')}"), ("collected_at", "collected", None)]
    history = [{"at": batch[k], "state": state, **({"detail": detail} if detail else {})}
               for k, state, detail in marks if batch.get(k)]
    history += [{"at": a["created_at"], "state": f"operator {a['action']}", "actor": a["actor"],
                 "reason": a["reason"], "changed": a["changed"], "then": a["selector"].get("then")}
                for a in actions]
    return sorted(history, key=lambda h: h["at"])


def batch_detail(store: ForgeStore, ref: str | int) -> dict[str, Any]:
    """One batch (by Forge id, forge batch id or provider batch id; hot or archived) with its history,
    the provider's request counts, its jobs by state, stored answers by outcome, files and cost."""
    batch = find_batch(store, ref)
    outline = store.batches.outline(batch["id"])
    return _plain({
        "batch": {k: batch.get(k) for k in ("id", "forge_batch_id", "provider", "model", "processor",
                                            "processor_version", "state", "provider_batch_id", "key_alias",
                                            "request_count", "bytes", "raw_status", "submit_attempts",
                                            "last_error", "archived")},
        "history": _history(batch, outline["actions"]),
        "provider_counts": batch.get("counts") or {},
        "jobs": outline["jobs"],
        "results": outline["results"],
        "files": {"input_file_id": batch.get("input_file_id")},
        "cost_usd": store.batches.cost(batch["id"]),
        "actions": outline["actions"],
    })
