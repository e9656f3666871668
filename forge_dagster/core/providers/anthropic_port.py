"""Anthropic Message Batches and Messages behind the provider port.

Anthropic batches carry no metadata, so `find_submitted` recognises ours by shape (see its docstring)
and must be told which provider batches belong to other Forge batches: the port remembers the ones it
created or was told about (`mark_taken`), and callers may pass more (`exclude`).
`ended` is split by the request counts, never collapsed: cancel initiated and some requests canceled ->
ended_cancelled; some expired -> ended_expired; otherwise ended_completed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import anthropic

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
from forge_dagster.core.providers.results import anthropic_batch_item, anthropic_message_item, match_results
from forge_dagster.core.providers.wire import anthropic_batch_entry

log = logging.getLogger(__name__)

MAX_LISTED_BATCHES = 2_000  # find_submitted gives up after scanning this many batches
MAX_REMEMBERED_BATCHES = 20_000  # provider batch ids the port remembers as belonging to a Forge batch
_OTHER = ""  # owner recorded for ids known to be taken by some other Forge batch


class AnthropicPort(ProviderPort):
    """The Anthropic port: sync client for batches and `complete`, AsyncAnthropic for `acomplete`."""

    provider = Provider.ANTHROPIC

    def __init__(self, credentials: ProviderCredentials, **options: Any) -> None:
        super().__init__(credentials, **options)
        self._client = anthropic.Anthropic(**self._client_kwargs())
        self._owners: OrderedDict[str, str] = OrderedDict()  # provider batch id -> forge batch id
        self._owners_lock = threading.Lock()

    # -- batch -------------------------------------------------------------------------------------
    def _upload(self, batch: BatchSpec) -> list[dict[str, Any]]:
        return [anthropic_batch_entry(r) for r in batch.requests]  # one call: the requests go with the create

    def _create(self, batch: BatchSpec, upload: list[dict[str, Any]]) -> SubmittedBatch:
        log.debug("batch %s: creating Anthropic batch of %d requests", batch.forge_batch_id, len(upload))
        created = self._client.messages.batches.create(requests=upload)  # type: ignore[arg-type]
        log.info("batch %s: created Anthropic batch %s", batch.forge_batch_id, created.id)
        self._remember(created.id, batch.forge_batch_id)
        return SubmittedBatch(provider_batch_id=created.id)

    def mark_taken(self, provider_batch_ids: Iterable[str]) -> None:
        """Record provider batches that already belong to Forge batches (the ones the store holds), so
        no lookup for a batch still being submitted returns them."""
        for provider_batch_id in provider_batch_ids:
            self._remember(provider_batch_id, _OTHER)

    def _remember(self, provider_batch_id: str, forge_batch_id: str) -> None:
        with self._owners_lock:
            self._owners[provider_batch_id] = forge_batch_id
            self._owners.move_to_end(provider_batch_id)
            while len(self._owners) > MAX_REMEMBERED_BATCHES:
                self._owners.popitem(last=False)

    def _taken_by_another(self, provider_batch_id: str, forge_batch_id: str) -> bool:
        with self._owners_lock:
            owner = self._owners.get(provider_batch_id)
        return owner is not None and owner != forge_batch_id

    def find_submitted(
        self, batch: BatchSpec, *, since: float | None = None, exclude: Collection[str] = ()
    ) -> SubmittedBatch | None:
        """Rule (Anthropic batches have no metadata): a batch created at or after `since` minus clock
        skew, whose request counts sum to `len(batch.requests)`, and, once it has ended, whose first
        result line carries one of our custom_ids (results do not exist before the end). Batches in
        `exclude` and batches this port created for (or was told belong to) other Forge batches never
        qualify: several size-capped batches going out together all have the same count. If several
        still qualify, the oldest wins and the others are logged: the caller should pass the `since` it
        persisted just before the create, which keeps that window small."""
        ours = {r.custom_id for r in batch.requests}
        excluded = set(exclude)
        if since is None:
            since = time.time() - self.resume_lookback_s
        try:
            candidates = [
                b
                for b in self._recent_batches(since)
                if b.id not in excluded
                and not self._taken_by_another(b.id, batch.forge_batch_id)
                and _total(b) == len(batch.requests)
                and self._first_result_is_ours(b, ours)
            ]
        except Exception as exc:
            raise classify(exc) from exc
        if not candidates:
            return None
        candidates.sort(key=lambda b: (b.created_at, b.id))
        if len(candidates) > 1:
            log.warning(
                "batch %s: %d Anthropic batches fit (created after the bound, %d requests); using %s",
                batch.forge_batch_id,
                len(candidates),
                len(batch.requests),
                candidates[0].id,
            )
        self._remember(candidates[0].id, batch.forge_batch_id)
        return SubmittedBatch(provider_batch_id=candidates[0].id, reconciled=True)

    def _recent_batches(self, since: float | None) -> Iterator[Any]:
        bound = None if since is None else since - CLOCK_SKEW_S
        for scanned, listed in enumerate(self._client.messages.batches.list(limit=100)):
            if scanned >= MAX_LISTED_BATCHES or (bound is not None and listed.created_at.timestamp() < bound):
                return
            yield listed

    def _first_result_is_ours(self, remote: Any, ours: set[str]) -> bool:
        if remote.processing_status != "ended" or not remote.results_url:
            return True  # cannot tell before the end: counts and time decide
        lines = self._result_lines(remote.id)
        try:
            first = next(lines, None)
        finally:
            lines.close()
        return first is None or first.get("custom_id") in ours

    def status(self, provider_batch_id: str) -> BatchStatus:
        try:
            return _status(self._client.messages.batches.retrieve(provider_batch_id))
        except Exception as exc:
            raise classify(exc) from exc

    def results(self, provider_batch_id: str, expected_custom_ids: Collection[str]) -> list[ResultItem]:
        """Items from the results stream, matched by custom_id. Raises `BatchNotEndedError` while the
        batch is still running."""
        status = self.status(provider_batch_id)
        if not status.ended:
            raise BatchNotEndedError(
                f"Anthropic batch {provider_batch_id} is {status.raw_status}; results come at the end"
            )
        items: list[ResultItem] = []
        try:
            for number, line in enumerate(self._result_lines(provider_batch_id), start=1):
                item = anthropic_batch_item(line)
                if item is None:
                    log.warning("batch %s: result line %d has no custom_id", provider_batch_id, number)
                    continue
                items.append(item)
        except Exception as exc:
            raise classify(exc) from exc
        return match_results(expected_custom_ids, items, provider_batch_id=provider_batch_id)

    def _result_lines(self, provider_batch_id: str) -> Iterator[dict[str, Any]]:
        """The results stream as raw JSON objects; lines that are not JSON objects are logged and skipped."""
        results = self._client.messages.batches.with_streaming_response.results(provider_batch_id)
        with results as response:
            for number, line in enumerate(response.iter_lines(), start=1):
                if not line.strip():
                    continue
                try:
                    parsed = json.loads(line)
                except ValueError:
                    log.warning("batch %s: result line %d is not JSON; skipped", provider_batch_id, number)
                    continue
                if isinstance(parsed, dict):
                    yield parsed

    def cancel(self, provider_batch_id: str) -> BatchStatus:
        try:
            return _status(self._client.messages.batches.cancel(provider_batch_id))
        except Exception as exc:
            raise classify(exc) from exc

    # -- realtime ----------------------------------------------------------------------------------
    def complete(self, request: ProviderRequest) -> ResultItem:
        resource = self._client.messages
        known, extra = split_known_kwargs(resource.create, non_streaming(request.body))
        try:  # the raw response: its JSON as the provider sent it, without building the SDK's models
            raw = resource.with_raw_response.create(**known, extra_body=extra or None)
        except Exception as exc:
            raise classify(exc) from exc
        return anthropic_message_item(request.custom_id, raw.http_response.json())

    async def acomplete(self, request: ProviderRequest) -> ResultItem:
        body = non_streaming(request.body)
        try:  # the body as rendered, the answer's JSON as the provider sent it (no SDK models either way)
            answer = await post_json(self._async_client(), "/v1/messages", body)
        except Exception as exc:
            raise classify(exc) from exc
        return anthropic_message_item(request.custom_id, answer)

    def _new_async_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(**self._client_kwargs())

    def close(self) -> None:
        self._client.close()

    def forget_batch(self, provider_batch_id: str) -> bool:
        """Delete an ended batch and its results (a 404 means gone already)."""
        try:
            self._client.messages.batches.delete(provider_batch_id)
        except anthropic.NotFoundError:
            return True
        except Exception as exc:
            raise classify(exc) from exc
        return True


def _total(remote: Any) -> int:
    c = remote.request_counts
    return c.processing + c.succeeded + c.errored + c.canceled + c.expired


def _status(remote: Any) -> BatchStatus:
    c = remote.request_counts
    counts = RequestCounts(
        total=_total(remote),
        processing=c.processing,
        succeeded=c.succeeded,
        errored=c.errored,
        expired=c.expired,
        canceled=c.canceled,
    )
    if remote.processing_status == "in_progress":
        state = BatchState.IN_PROGRESS
    elif remote.processing_status == "canceling":
        state = BatchState.CANCELLING
    elif remote.cancel_initiated_at is not None and c.canceled > 0:
        state = BatchState.ENDED_CANCELLED
    elif c.expired > 0:
        state = BatchState.ENDED_EXPIRED
    else:
        state = BatchState.ENDED_COMPLETED
    return BatchStatus(
        provider_batch_id=remote.id, state=state, counts=counts, raw_status=remote.processing_status
    )
