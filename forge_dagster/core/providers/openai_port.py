"""OpenAI Batch API and the realtime endpoints (chat completions, responses, embeddings, moderations)
behind the provider port.

Submit = upload a JSONL input file (purpose `batch`) + create the batch with
`metadata={"forge_batch_id": ...}`; that metadata is how `find_submitted` recognises our batch after a
crash or an ambiguous create. Results = the output file AND the error file, matched by custom_id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator
from typing import Any

import openai

from forge_dagster.core.models import (
    BatchSpec,
    BatchState,
    BatchStatus,
    Provider,
    ProviderRequest,
    RequestCounts,
    ResultItem,
    SubmittedBatch,
)
from forge_dagster.core.providers.base import (
    CLOCK_SKEW_S,
    BatchNotEndedError,
    ProviderCredentials,
    ProviderPort,
    non_streaming,
    post_json,
    split_known_kwargs,
)
from forge_dagster.core.providers.errors import classify
from forge_dagster.core.providers.results import match_results, openai_batch_item, openai_body_item
from forge_dagster.core.providers.wire import encode_line, openai_url

log = logging.getLogger(__name__)

FORGE_BATCH_ID_KEY = "forge_batch_id"
MAX_LISTED_BATCHES = 2_000  # find_submitted gives up after scanning this many batches
UPLOAD_PREFIX = "forge-"  # the filename of every batch input file Forge uploads starts with it
OUTPUT_EXPIRES_S = 30 * 86_400  # output_expires_after: the longest OpenAI allows (files are deleted sooner)

_STATES = {
    "validating": BatchState.IN_PROGRESS,
    "in_progress": BatchState.IN_PROGRESS,
    "finalizing": BatchState.IN_PROGRESS,
    "cancelling": BatchState.CANCELLING,
    "completed": BatchState.ENDED_COMPLETED,
    "expired": BatchState.ENDED_EXPIRED,
    "cancelled": BatchState.ENDED_CANCELLED,
    "failed": BatchState.ENDED_FAILED,
}


class OpenAIPort(ProviderPort):
    """The OpenAI port: sync client for batches and `complete`, AsyncOpenAI for `acomplete`."""

    provider = Provider.OPENAI

    def __init__(self, credentials: ProviderCredentials, **options: Any) -> None:
        super().__init__(credentials, **options)
        self._client = openai.OpenAI(**self._client_kwargs())

    # -- batch -------------------------------------------------------------------------------------
    def _upload(self, batch: BatchSpec) -> str:
        content = b"".join(encode_line(Provider.OPENAI, r) for r in batch.requests)
        uploaded = self._client.files.create(
            file=(f"{UPLOAD_PREFIX}{batch.forge_batch_id}.jsonl", content, "application/jsonl"), purpose="batch"
        )
        return uploaded.id

    def _create(self, batch: BatchSpec, upload: str) -> SubmittedBatch:
        log.debug("batch %s: creating OpenAI batch from file %s", batch.forge_batch_id, upload)
        created = self._client.batches.create(
            input_file_id=upload,
            endpoint=openai_url(batch.endpoint),
            completion_window="24h",
            metadata={FORGE_BATCH_ID_KEY: batch.forge_batch_id},
            # Output and error files expire by themselves even if Forge never deletes them.
            output_expires_after={"anchor": "created_at", "seconds": OUTPUT_EXPIRES_S},
        )
        log.info("batch %s: created OpenAI batch %s", batch.forge_batch_id, created.id)
        return SubmittedBatch(provider_batch_id=created.id, input_file_id=upload)

    def find_submitted(self, batch: BatchSpec, *, since: float | None = None) -> SubmittedBatch | None:
        """Rule: the batch whose metadata `forge_batch_id` equals ours, scanning the newest first down to
        `since` (minus clock skew) or `MAX_LISTED_BATCHES`. If several match (an earlier duplicate), the
        oldest non-failed one wins and the others are logged."""
        try:
            matches = [
                b
                for b in self._recent_batches(since)
                if (b.metadata or {}).get(FORGE_BATCH_ID_KEY) == batch.forge_batch_id
            ]
        except Exception as exc:
            raise classify(exc) from exc
        if not matches:
            return None
        matches.sort(key=lambda b: (b.status == "failed", b.created_at, b.id))
        chosen = matches[0]
        if len(matches) > 1:
            log.warning(
                "batch %s: %d provider batches carry this forge_batch_id; using %s, ignoring %s",
                batch.forge_batch_id,
                len(matches),
                chosen.id,
                [b.id for b in matches[1:]],
            )
        return SubmittedBatch(
            provider_batch_id=chosen.id, input_file_id=chosen.input_file_id, reconciled=True
        )

    def _recent_batches(self, since: float | None) -> Iterator[Any]:
        bound = None if since is None else since - CLOCK_SKEW_S
        for scanned, listed in enumerate(self._client.batches.list(limit=100)):
            if scanned >= MAX_LISTED_BATCHES or (bound is not None and listed.created_at < bound):
                return
            yield listed

    def status(self, provider_batch_id: str) -> BatchStatus:
        try:
            return _status(self._client.batches.retrieve(provider_batch_id))
        except Exception as exc:
            raise classify(exc) from exc

    def results(self, provider_batch_id: str, expected_custom_ids: Collection[str]) -> list[ResultItem]:
        """Items from the output file and the error file (either may be absent), matched by custom_id.
        Raises `BatchNotEndedError` while the batch is still running."""
        try:
            remote = self._client.batches.retrieve(provider_batch_id)
        except Exception as exc:
            raise classify(exc) from exc
        if not _status(remote).ended:
            raise BatchNotEndedError(
                f"OpenAI batch {provider_batch_id} is {remote.status}; results come at the end"
            )
        try:
            items: list[ResultItem] = []
            for file_id in (remote.output_file_id, remote.error_file_id):
                if file_id:
                    items.extend(self._file_items(provider_batch_id, file_id))
        except Exception as exc:
            raise classify(exc) from exc
        return match_results(expected_custom_ids, items, provider_batch_id=provider_batch_id)

    def _file_items(self, provider_batch_id: str, file_id: str) -> Iterator[ResultItem]:
        text = self._client.files.content(file_id).text
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except ValueError:
                log.warning(
                    "batch %s: file %s line %d is not JSON; skipped", provider_batch_id, file_id, number
                )
                continue
            item = openai_batch_item(parsed) if isinstance(parsed, dict) else None
            if item is None:
                log.warning("batch %s: file %s line %d has no custom_id", provider_batch_id, file_id, number)
                continue
            yield item

    def cancel(self, provider_batch_id: str) -> BatchStatus:
        try:
            return _status(self._client.batches.cancel(provider_batch_id))
        except Exception as exc:
            raise classify(exc) from exc

    # -- realtime ----------------------------------------------------------------------------------
    def complete(self, request: ProviderRequest) -> ResultItem:
        resource = _resource(self._client, request.endpoint)
        known, extra = split_known_kwargs(resource.create, non_streaming(request.body))
        try:  # the raw response: its JSON as the provider sent it, without building the SDK's models
            raw = resource.with_raw_response.create(**known, extra_body=extra or None)
        except Exception as exc:
            raise classify(exc) from exc
        return openai_body_item(request.custom_id, raw.http_response.json())

    async def acomplete(self, request: ProviderRequest) -> ResultItem:
        body = non_streaming(request.body)
        path = openai_url(request.endpoint).removeprefix("/v1")  # the client's base URL ends in /v1
        try:  # the body as rendered, the answer's JSON as the provider sent it (no SDK models either way)
            answer = await post_json(self._async_client(), path, body)
        except Exception as exc:
            raise classify(exc) from exc
        return openai_body_item(request.custom_id, answer)

    def _new_async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(**self._client_kwargs())

    def close(self) -> None:
        self._client.close()

    # -- provider storage --------------------------------------------------------------------------
    def release_batch(self, provider_batch_id: str) -> list[str]:
        """Delete the batch's input, output and error files (a 404 means gone already)."""
        try:
            remote = self._client.batches.retrieve(provider_batch_id)
        except openai.NotFoundError:
            return []  # the provider lost the batch: it keeps nothing of it
        except Exception as exc:
            raise classify(exc) from exc
        files = [f for f in (remote.input_file_id, remote.output_file_id, remote.error_file_id) if f]
        return [f for f in files if self.delete_file(f)]

    def delete_file(self, file_id: str) -> bool:
        try:
            self._client.files.delete(file_id)
        except openai.NotFoundError:
            return True
        except Exception as exc:
            raise classify(exc) from exc
        return True

    def forge_uploads(self) -> list[tuple[str, str, float]]:
        try:
            return [(f.id, f.filename, float(f.created_at)) for f in self._client.files.list(purpose="batch")
                    if f.filename.startswith(UPLOAD_PREFIX)]
        except Exception as exc:
            raise classify(exc) from exc


def _resource(client: Any, endpoint: str) -> Any:
    """The SDK resource whose `create` calls `endpoint`."""
    resources = {"chat": lambda: client.chat.completions, "responses": lambda: client.responses,
                 "embeddings": lambda: client.embeddings, "moderations": lambda: client.moderations}
    if endpoint not in resources:
        raise ValueError(f"OpenAI has no {endpoint!r} endpoint")
    return resources[endpoint]()


def _status(remote: Any) -> BatchStatus:
    state = _STATES.get(remote.status, BatchState.IN_PROGRESS)
    counts = remote.request_counts
    total, done, failed = (counts.total, counts.completed, counts.failed) if counts else (0, 0, 0)
    rest = max(total - done - failed, 0)
    # OpenAI counts only completed and failed (unfinished requests of an expired or cancelled batch may be
    # counted as failed); the remainder is still running, or expired / cancelled. results() has the split.
    return BatchStatus(
        provider_batch_id=remote.id,
        state=state,
        counts=RequestCounts(
            total=total,
            processing=rest if state in (BatchState.IN_PROGRESS, BatchState.CANCELLING) else 0,
            succeeded=done,
            errored=failed + (rest if state in (BatchState.ENDED_COMPLETED, BatchState.ENDED_FAILED) else 0),
            expired=rest if state == BatchState.ENDED_EXPIRED else 0,
            canceled=rest if state == BatchState.ENDED_CANCELLED else 0,
        ),
        raw_status=remote.status,
    )
