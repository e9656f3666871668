"""Anthropic Message Batches engine: create, lazy lifecycle, cancel, results.

Like the OpenAI engine, a batch ends at the first read once `batch_processing_s` has passed. Until it ends
its request_counts show only `processing`. `expire_batches` ends it with `expire_complete_fraction` of the
requests finished and the rest `expired`; a cancel answers `canceling` and the next read ends it with
`cancel_complete_fraction` finished and the rest `canceled`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from forge_dagster.core.models import CUSTOM_ID_RE
from forge_dagster.simulator import answers
from forge_dagster.simulator.anthropic_format import validate_params
from forge_dagster.simulator.dice import fingerprint, unit

if TYPE_CHECKING:
    from forge_dagster.simulator.state import SimState

MAX_REQUESTS = 100_000


def iso(ts: float | None) -> str | None:
    """RFC 3339 with milliseconds, as the Anthropic API writes times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class MessageBatch:
    id: str
    seq: int
    created_at: float
    key: str
    requests: list[dict[str, Any]]
    occurrences: list[int]
    status: str = "in_progress"
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    results: list[dict[str, Any]] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def to_dict(self, base_url: str) -> dict[str, Any]:
        with self.lock:
            return self._to_dict(base_url)

    def _to_dict(self, base_url: str) -> dict[str, Any]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if self.results is None:
            counts["processing"] = len(self.requests)
        else:
            for entry in self.results:
                counts[entry["result"]["type"]] += 1
        return {"id": self.id, "type": "message_batch", "processing_status": self.status,
                "request_counts": counts, "ended_at": iso(self.ended_at), "created_at": iso(self.created_at),
                "expires_at": iso(self.created_at + 24 * 3600), "archived_at": None,
                "cancel_initiated_at": iso(self.cancel_initiated_at),
                "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if self.results is not None
                else None}


def validate_requests(requests: Any) -> str | None:
    """Why a batch `requests` array is unacceptable (duplicate custom_id included), or None."""
    if not isinstance(requests, list) or not requests:
        return "requests: at least one request is required"
    if len(requests) > MAX_REQUESTS:
        return f"requests: a batch holds at most {MAX_REQUESTS} requests"
    seen: set[str] = set()
    for i, entry in enumerate(requests):
        cid = entry.get("custom_id") if isinstance(entry, dict) else None
        if not isinstance(cid, str) or not CUSTOM_ID_RE.match(cid):
            return f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"
        if cid in seen:
            return f"requests.{i}.custom_id: Duplicate custom_id '{cid}': each custom_id must be unique in a batch"
        seen.add(cid)
        problem = validate_params(entry.get("params"))
        if problem:
            return f"requests.{i}.params.{problem}"
    return None


class AnthropicStore:
    """Message batches of the simulated Anthropic API."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.batches: dict[str, MessageBatch] = {}

    def clear(self) -> None:
        self.batches.clear()

    def create(self, requests: list[dict[str, Any]], key: str) -> MessageBatch:
        """Create a batch from already validated requests."""
        state = self.state
        with state.lock:
            active = state.content_faults_on(in_batch=True)
            occurrences = [state.occurrence("line", fingerprint(r), active) for r in requests]
            batch = MessageBatch(state.dice.new_id("msgbatch_", "msgbatch"), len(self.batches), state.now(), key,
                                 requests, occurrences)
            self.batches[batch.id] = batch
        state.quota.spend("anthropic", key, sum(len(json.dumps(r["params"])) // 4 for r in requests))
        return batch

    def get(self, batch_id: str) -> MessageBatch | None:
        """The batch, or None when unknown, deleted, or older than the results retention (then forgotten,
        as the API forgets a batch and its results 29 days after creation)."""
        with self.state.lock:
            self._forget_expired()
            batch = self.batches.get(batch_id)
        if batch is not None:
            self.advance(batch)
        return batch

    def _forget_expired(self) -> None:
        """Drop batches older than the results retention (call under the state lock)."""
        oldest = self.state.now() - self.state.config.anthropic_results_retention_s
        for batch_id in [b.id for b in self.batches.values() if b.created_at < oldest]:
            del self.batches[batch_id]

    def listing(self, limit: int, after_id: str | None, before_id: str | None) -> tuple[list[MessageBatch], bool]:
        """Newest first; after_id pages to older batches, before_id to newer ones."""
        with self.state.lock:
            self._forget_expired()
            ordered = sorted(self.batches.values(), key=lambda b: (b.created_at, b.seq), reverse=True)
            ids = [b.id for b in ordered]
            if before_id:
                head = ordered[: ids.index(before_id)] if before_id in ids else []
                page, more = head[-limit:], len(head) > limit
            else:
                if after_id:
                    ordered = ordered[ids.index(after_id) + 1:] if after_id in ids else []
                page, more = ordered[:limit], len(ordered) > limit
        for batch in page:
            self.advance(batch)
        return page, more

    def cancel(self, batch_id: str) -> MessageBatch | None:
        """Start canceling an in-progress batch (the next read ends it); an ended batch is returned as is."""
        with self.state.lock:
            batch = self.batches.get(batch_id)
        if batch is not None:
            with batch.lock:
                if batch.status == "in_progress":
                    batch.status = "canceling"
                    batch.cancel_initiated_at = self.state.now()
        return batch

    def delete(self, batch_id: str) -> bool | None:
        """Delete an ended batch: True; still processing: False; unknown: None."""
        batch = self.get(batch_id)
        if batch is None:
            return None
        if batch.status != "ended":
            return False
        with self.state.lock:
            self.batches.pop(batch_id, None)
        return True

    def advance(self, batch: MessageBatch) -> None:
        """Move the batch on (called on every read); results are computed under the batch's own lock."""
        with batch.lock:
            self._advance(batch)

    def _advance(self, batch: MessageBatch) -> None:
        now, cfg = self.state.now(), self.state.config
        if batch.status == "ended":
            return
        if batch.status == "canceling":
            self._finish(batch, "canceled", cfg.cancel_complete_fraction, now)
        elif now - batch.created_at >= cfg.batch_processing_s:
            fraction = cfg.expire_complete_fraction if cfg.expire_batches else 1.0
            self._finish(batch, "expired", fraction, now)

    def _finish(self, batch: MessageBatch, unfinished: str, fraction: float, now: float) -> None:
        state, seed = self.state, self.state.seed
        content_fp = fingerprint([r["custom_id"] for r in batch.requests])
        ranked = sorted(range(len(batch.requests)),
                        key=lambda i: unit(seed, "finish", content_fp, batch.requests[i]["custom_id"]))
        finished = set(ranked[: round(fraction * len(batch.requests))])
        results, output_tokens = [], 0
        for i, request in enumerate(batch.requests):
            if i not in finished:
                results.append({"custom_id": request["custom_id"], "result": {"type": unfinished}})
                continue
            status, body, gen = answers.anthropic_message(state, request["params"], fingerprint(request),
                                                          batch.occurrences[i], in_batch=True,
                                                          unique=f"{batch.id}/{i}", key=batch.key)
            if status == 200:
                output_tokens += gen.output_tokens if gen else 0
                results.append({"custom_id": request["custom_id"], "result": {"type": "succeeded", "message": body}})
            else:
                results.append({"custom_id": request["custom_id"], "result": {"type": "errored", "error": body}})
        if state.config.out_of_order:
            results.sort(key=lambda e: unit(seed, "order", content_fp, e["custom_id"]))
        state.quota.spend("anthropic", batch.key, output_tokens)
        batch.results = results
        batch.status = "ended"
        batch.ended_at = now

    def results_jsonl(self, batch_id: str) -> bytes | None:
        """The results file of an ended batch, or None when unknown or not ended."""
        batch = self.get(batch_id)
        if batch is None or batch.results is None:
            return None
        with batch.lock:
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch.results).encode()
