"""OpenAI files and Batch API engine: uploads, batch lifecycle, output and error files.

A batch is evaluated lazily when read: the create answer says `validating`; the first read once
`batch_processing_s` has passed since creation ends it (completed, or expired when `expire_batches`).
A cancel answers `cancelling`; the next read ends it `cancelled`, with `cancel_complete_fraction` of the
requests finished. Unfinished requests go to the error file (`batch_expired` / `batch_cancelled`).
With `enqueued_token_limit`, a batch whose input tokens would take the key's unfinished batches of its
model over the limit fails at validation with `token_limit_exceeded` (no output or error file).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forge_dagster.simulator import answers
from forge_dagster.simulator.dice import digest, fingerprint, unit

if TYPE_CHECKING:
    from forge_dagster.simulator.state import SimState

ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/moderations"})
EMBEDDING_BATCH_INPUTS = 50_000  # embedding inputs across all requests of one batch
_UNFINISHED = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


def _token_limit_error(model: str | None, limit: int) -> dict[str, Any]:
    """The errors of a batch refused for the enqueued-token limit, worded as OpenAI words them."""
    message = (f"Enqueued token limit reached for {model} in organization org-simulator. Limit: {limit:,} "
               "enqueued tokens. Please try again once some in_progress batches have been completed.")
    return {"object": "list", "data": [{"code": "token_limit_exceeded", "line": None, "param": None,
                                        "message": message}]}


class BatchInputError(ValueError):
    """An uploaded batch file whose lines are not valid Batch API requests."""


@dataclass
class StoredFile:
    id: str
    data: bytes
    filename: str
    purpose: str
    created_at: int
    expires_at: int | None = None  # an output or error file of a batch created with output_expires_after

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "status_details": None, "expires_at": self.expires_at}


@dataclass
class Batch:
    id: str
    seq: int
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    key: str
    lines: list[dict[str, Any]]
    occurrences: list[int]
    model: str | None
    status: str = "validating"
    errors: dict[str, Any] | None = None
    times: dict[str, int | None] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    input_tokens: int = 0  # counted against the enqueued-token limit while the batch is unfinished
    output_expires_s: int | None = None  # output_expires_after.seconds (anchor created_at) of its result files
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        with self.lock:
            return self._to_dict()

    def _to_dict(self) -> dict[str, Any]:
        created = int(self.created_at)
        body = {"id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
                "errors": self.errors, "input_file_id": self.input_file_id,
                "completion_window": self.completion_window, "status": self.status,
                "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": created, "expires_at": created + 24 * 3600,
                "request_counts": self.counts or {"total": len(self.lines), "completed": 0, "failed": 0},
                "usage": self.usage or _usage([]), "metadata": self.metadata}
        for name in ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                     "cancelling_at", "cancelled_at"):
            body[name] = self.times.get(name)
        return body


def parse_batch_file(data: bytes) -> list[dict[str, Any]]:
    """The request lines of a batch input file; BatchInputError names the first bad line."""
    lines = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            raise BatchInputError(f"Line {number} is not valid JSON: {exc}") from exc
        missing = [k for k in ("custom_id", "method", "url", "body") if not isinstance(line, dict) or k not in line]
        if missing:
            raise BatchInputError(f"Line {number} is missing required field(s): {', '.join(missing)}")
        if not isinstance(line["body"], dict) or line["method"] != "POST":
            raise BatchInputError(f"Line {number}: method must be POST and body an object")
        lines.append(line)
    if not lines:
        raise BatchInputError("The batch input file is empty.")
    return lines


def _body_usage(body: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, cached input, output, reasoning) tokens of one answer body, whatever its endpoint."""
    usage = body.get("usage") or {}
    if "input_tokens" in usage:  # a Response
        return (int(usage["input_tokens"]), int((usage.get("input_tokens_details") or {}).get("cached_tokens", 0)),
                int(usage.get("output_tokens", 0)),
                int((usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0)))
    return (int(usage.get("prompt_tokens", 0)), int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
            int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)))


def _usage(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    inp = cached = outp = reasoning = 0
    for body in bodies:
        a, b, c, d = _body_usage(body)
        inp, cached, outp, reasoning = inp + a, cached + b, outp + c, reasoning + d
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": outp, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + outp}


class OpenAIStore:
    """Files and batches of the simulated OpenAI API."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}

    def clear(self) -> None:
        self.files.clear()
        self.batches.clear()

    def add_file(self, data: bytes, filename: str, purpose: str) -> StoredFile:
        """Store a file; a `batch` file must hold valid request lines (BatchInputError otherwise)."""
        if purpose == "batch":
            parse_batch_file(data)
        stored = StoredFile(self.state.dice.new_id("file-", "file", 22), data, filename, purpose,
                            int(self.state.now()))
        with self.state.lock:
            self.files[stored.id] = stored
        return stored

    def live_file(self, file_id: str) -> StoredFile | None:
        """The file, or None when it is unknown, deleted or past its `expires_at` (then it is dropped)."""
        with self.state.lock:
            stored = self.files.get(file_id)
            if stored is not None and stored.expires_at is not None and stored.expires_at <= self.state.now():
                del self.files[file_id]
                return None
            return stored

    def live_files(self) -> list[StoredFile]:
        with self.state.lock:
            ids = list(self.files)
        return [f for f in map(self.live_file, ids) if f is not None]

    def create_batch(self, input_file_id: str, endpoint: str, window: str, metadata: Any, key: str,
                     output_expires_s: int | None = None) -> Batch:
        """Create a batch from an uploaded file (validation problems, and going over the enqueued-token
        limit, surface as status `failed`). Only a batch that will run spends quota."""
        state = self.state
        with state.lock:
            source = self.files[input_file_id]
        lines = parse_batch_file(source.data)
        model = next((str(ln["body"].get("model")) for ln in lines if ln["body"].get("model")), None)
        input_tokens = sum(len(json.dumps(ln["body"])) // 4 for ln in lines)
        limit = state.config.enqueued_token_limit
        enqueued = self.enqueued_tokens(key, model) if limit else 0
        with state.lock:
            active = state.content_faults_on(in_batch=True)
            occurrences = [state.occurrence("line", fingerprint(line), active) for line in lines]
            batch = Batch(state.dice.new_id("batch_", "batch"), len(self.batches), input_file_id, endpoint, window,
                          metadata, state.now(), key, lines, occurrences, model, input_tokens=input_tokens,
                          output_expires_s=output_expires_s)
            batch.errors = self._validation_errors(lines, endpoint)
            if batch.errors is None and limit and enqueued + input_tokens > limit:
                batch.errors = _token_limit_error(model, limit)
            self.batches[batch.id] = batch
        if batch.errors is None:
            state.quota.spend("openai", key, input_tokens)
        return batch

    def enqueued_tokens(self, key: str, model: str | None) -> int:
        """Input tokens of the key's unfinished batches for `model` (each is brought up to date first)."""
        with self.state.lock:
            mine = [b for b in self.batches.values() if b.key == key and b.model == model and b.status not in ENDED]
        for batch in mine:
            self.advance(batch)
        return sum(b.input_tokens for b in mine if b.status not in ENDED)

    @staticmethod
    def _validation_errors(lines: list[dict[str, Any]], endpoint: str) -> dict[str, Any] | None:
        seen: set[str] = set()
        errors = []
        for number, line in enumerate(lines, start=1):
            cid = str(line["custom_id"])
            if cid in seen:
                errors.append({"code": "duplicate_custom_id", "line": number, "param": "custom_id",
                               "message": f"The custom_id '{cid}' on line {number} is a duplicate of a prior "
                                          "request's custom_id. Each custom_id must be unique within a batch."})
            seen.add(cid)
            if line["url"] != endpoint:
                errors.append({"code": "mismatched_endpoint", "line": number, "param": "url",
                               "message": f"Line {number} targets {line['url']}, not the batch endpoint "
                                          f"{endpoint}."})
        if endpoint == "/v1/embeddings":
            inputs = sum(len(ln["body"]["input"]) if isinstance(ln["body"].get("input"), list) else 1 for ln in lines)
            if inputs > EMBEDDING_BATCH_INPUTS:
                errors.append({"code": "too_many_inputs", "line": None, "param": None,
                               "message": f"The batch has {inputs} embedding inputs; at most "
                                          f"{EMBEDDING_BATCH_INPUTS} are allowed per batch."})
        return {"object": "list", "data": errors} if errors else None

    def get(self, batch_id: str) -> Batch | None:
        with self.state.lock:
            batch = self.batches.get(batch_id)
        if batch is not None:
            self.advance(batch)
        return batch

    def listing(self, limit: int, after: str | None) -> tuple[list[Batch], bool]:
        """Batches newest first, starting after the `after` id; and whether more follow."""
        with self.state.lock:
            ordered = sorted(self.batches.values(), key=lambda b: (b.created_at, b.seq), reverse=True)
            if after:
                ids = [b.id for b in ordered]
                ordered = ordered[ids.index(after) + 1:] if after in ids else []
            page = ordered[:limit]
        for batch in page:
            self.advance(batch)
        return page, len(ordered) > limit

    def cancel(self, batch_id: str) -> Batch | None:
        """Start cancelling (the next read ends it). ValueError if the batch already ended."""
        with self.state.lock:
            batch = self.batches.get(batch_id)
        if batch is None:
            return None
        with batch.lock:
            if batch.status in ENDED:
                raise ValueError(f"Cannot cancel a batch with status '{batch.status}'.")
            if batch.status != "cancelling":
                batch.status = "cancelling"
                batch.times["cancelling_at"] = int(self.state.now())
            return batch

    def advance(self, batch: Batch) -> None:
        """Move the batch on as far as time and knobs allow (called on every read). Results are computed
        under the batch's own lock, so a large batch does not stall other requests."""
        with batch.lock:
            self._advance(batch)

    def _advance(self, batch: Batch) -> None:
        now = self.state.now()
        if batch.status in ENDED:
            return
        if batch.errors is not None:
            batch.status = "failed"
            batch.times["failed_at"] = int(now)
            batch.counts = {"total": 0, "completed": 0, "failed": 0}
            return
        batch.times.setdefault("in_progress_at", int(batch.created_at))
        cfg = self.state.config
        if batch.status == "cancelling":
            self._finish(batch, "cancelled", cfg.cancel_complete_fraction, now)
        elif now - batch.created_at >= cfg.batch_processing_s:
            if cfg.expire_batches:
                self._finish(batch, "expired", cfg.expire_complete_fraction, now)
            else:
                self._finish(batch, "completed", 1.0, now)
        elif now - batch.created_at >= 0.9 * cfg.batch_processing_s:
            batch.status = "finalizing"
            batch.times.setdefault("finalizing_at", int(now))
        else:
            batch.status = "in_progress"

    def _finish(self, batch: Batch, status: str, fraction: float, now: float) -> None:
        state, seed = self.state, self.state.seed
        content_fp = fingerprint([ln["custom_id"] for ln in batch.lines])
        ranked = sorted(range(len(batch.lines)),
                        key=lambda i: unit(seed, "finish", content_fp, batch.lines[i]["custom_id"]))
        finished = set(ranked[: round(fraction * len(batch.lines))])
        outputs, errors, bodies = [], [], []
        for i, line in enumerate(batch.lines):
            line_id = "batch_req_" + digest(seed, batch.id, i)[:24]
            if i not in finished:
                code, message = _UNFINISHED[status]
                errors.append({"id": line_id, "custom_id": line["custom_id"], "response": None,
                               "error": {"code": code, "message": message}})
                continue
            fp = fingerprint(line)
            code_, body, _inp, _out = answers.openai_any(state, batch.endpoint, line["body"], fp, batch.occurrences[i],
                                                         batch.key, in_batch=True, unique=line_id)
            entry = {"id": line_id, "custom_id": line["custom_id"],
                     "response": {"status_code": code_, "request_id": "req_" + digest(seed, "req", line_id)[:24],
                                  "body": body}, "error": None}
            if code_ == 200:
                bodies.append(body)
                outputs.append(entry)
            else:
                (errors if state.config.line_4xx_file == "error" else outputs).append(entry)
        if state.config.out_of_order:
            outputs.sort(key=lambda e: unit(seed, "order", content_fp, e["custom_id"]))
            errors.sort(key=lambda e: unit(seed, "order", content_fp, e["custom_id"]))
        batch.usage = _usage(bodies)
        state.quota.spend("openai", batch.key, batch.usage["output_tokens"])
        batch.counts = {"total": len(batch.lines), "completed": len(bodies), "failed": len(batch.lines) - len(bodies)}
        if outputs:
            batch.output_file_id = self._result_file(batch, "output", outputs).id
        if errors:
            batch.error_file_id = self._result_file(batch, "error", errors).id
        batch.status = status
        if status != "cancelled":
            batch.times.setdefault("finalizing_at", int(now))
        batch.times[f"{status}_at"] = int(now)

    def _result_file(self, batch: Batch, kind: str, entries: list[dict[str, Any]]) -> StoredFile:
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
        created = int(self.state.now())
        expires = created + batch.output_expires_s if batch.output_expires_s else None
        stored = StoredFile(self.state.dice.new_id("file-", "file", 22), data, f"{batch.id}_{kind}.jsonl",
                            "batch_output", created, expires)
        with self.state.lock:
            self.files[stored.id] = stored
        return stored
