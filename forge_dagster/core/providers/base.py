"""The provider port: one interface for OpenAI Batch / Anthropic Message Batches and realtime calls.

`submit` is idempotent across crashes and ambiguous outcomes. The store persists the intent (batch state
`submitting`) before calling it; if a worker dies mid-submit, the next one calls `submit(resume=True)`,
which first looks for the batch at the provider (`find_submitted`). A create call that times out, loses
its connection or gets a 5xx may still have created the batch, so the port looks for it before giving up.
Clients are built with their own retries off: retry policy belongs to the store (backoff, retry-after).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from typing import Any

from forge_dagster.core.models import (
    BatchSpec,
    BatchStatus,
    ErrorClass,
    Provider,
    ProviderError,
    ProviderRequest,
    ResultItem,
    SubmittedBatch,
)
from forge_dagster.core.providers.errors import classify
from forge_dagster.core.providers.limits import check_limits
from forge_dagster.core.secrets import mask_secret, register_secret

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 120.0  # tolerance between our clock and the provider's when bounding by creation time
DEFAULT_RESUME_LOOKBACK_S = 48 * 3600.0


class BatchNotEndedError(RuntimeError):
    """`results` was asked for a batch that is still running: its missing results are not yet missing."""


class ProviderCredentials:
    """An API key with its endpoint. The key is held privately: `repr` and `str` mask it, and it is
    registered for log redaction as soon as the credentials exist."""

    __slots__ = ("_api_key", "base_url", "alias", "timeout_s")

    def __init__(
        self, api_key: str, base_url: str | None = None, alias: str = "default", timeout_s: float = 60
    ):
        if not api_key:
            raise ValueError("api_key must not be empty")
        register_secret(api_key)
        self._api_key = api_key
        self.base_url = base_url
        self.alias = alias
        self.timeout_s = float(timeout_s)

    def get_secret_value(self) -> str:
        """The key itself, for building a client. Never log or store what this returns."""
        return self._api_key

    @property
    def masked_key(self) -> str:
        return mask_secret(self._api_key)

    def __repr__(self) -> str:
        return (
            f"ProviderCredentials(api_key={self.masked_key!r}, base_url={self.base_url!r}, "
            f"alias={self.alias!r}, timeout_s={self.timeout_s!r})"
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("ProviderCredentials cannot be pickled (it holds an API key)")


class ProviderPort(ABC):
    """Batch and realtime access to one provider with one key."""

    provider: Provider

    def __init__(
        self,
        credentials: ProviderCredentials,
        *,
        reconcile_attempts: int = 3,
        reconcile_delay_s: float = 0.5,
        resume_lookback_s: float = DEFAULT_RESUME_LOOKBACK_S,
    ) -> None:
        self.credentials = credentials
        self.reconcile_attempts = max(1, reconcile_attempts)
        self.reconcile_delay_s = reconcile_delay_s
        self.resume_lookback_s = resume_lookback_s
        self._aclient: Any = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.credentials!r})"

    def _client_kwargs(self) -> dict[str, Any]:
        """SDK client arguments: our key, endpoint and timeout, and the client's own retries off."""
        return {
            "api_key": self.credentials.get_secret_value(),
            "base_url": self.credentials.base_url,
            "timeout": self.credentials.timeout_s,
            "max_retries": 0,
        }

    # -- batch -------------------------------------------------------------------------------------
    def submit(self, batch: BatchSpec, *, resume: bool = False, since: float | None = None) -> SubmittedBatch:
        """Upload and create the provider batch for `batch`, exactly once.

        `resume=True`: an earlier attempt may have reached the provider; return that batch if found.
        `since` (unix seconds) bounds that search, e.g. when the intent was persisted; default: the
        port's `resume_lookback_s`. Raises `BatchLimitError` before any call, `ProviderError` on failure
        (`ambiguous=True` when the batch may exist after all: resume later rather than resubmit blindly).
        """
        check_limits(batch)
        if batch.provider != self.provider:
            raise ValueError(f"batch {batch.forge_batch_id} is for {batch.provider}, not {self.provider}")
        if resume:
            bound = since if since is not None else time.time() - self.resume_lookback_s
            found = self.find_submitted(batch, since=bound)
            if found is not None:
                log.info(
                    "batch %s: resumed as provider batch %s", batch.forge_batch_id, found.provider_batch_id
                )
                return found
        try:
            upload = self._upload(batch)
        except Exception as exc:  # nothing was created yet: not ambiguous for the batch
            raise classify(exc) from exc
        attempt_started = time.time()
        try:
            return self._create(batch, upload)
        except Exception as exc:
            error = classify(exc)
            if not _may_have_created(error):
                raise error from exc
            log.warning(
                "batch %s: create outcome unknown (%s); looking for it at %s",
                batch.forge_batch_id,
                error.message,
                self.provider,
            )
            found = self._reconcile(batch, since=attempt_started)
            if found is not None:
                return found
            raise ProviderError(
                error.error_class,
                error.message,
                status_code=error.status_code,
                retry_after_s=error.retry_after_s,
                ambiguous=True,
            ) from exc

    def _reconcile(self, batch: BatchSpec, *, since: float) -> SubmittedBatch | None:
        for attempt in range(self.reconcile_attempts):
            if attempt:
                time.sleep(self.reconcile_delay_s * attempt)
            try:
                found = self.find_submitted(batch, since=since)
            except Exception as exc:  # the lookup may fail for the same reason the create did
                log.warning("batch %s: lookup failed: %s", batch.forge_batch_id, classify(exc).message)
                continue
            if found is not None:
                log.info("batch %s: reconciled with %s", batch.forge_batch_id, found.provider_batch_id)
                return found
        return None

    @abstractmethod
    def _upload(self, batch: BatchSpec) -> Any:
        """Everything before the create call (OpenAI: the input file). Failures here create no batch."""

    @abstractmethod
    def _create(self, batch: BatchSpec, upload: Any) -> SubmittedBatch:
        """The single create call, with the client's own retries off."""

    @abstractmethod
    def find_submitted(self, batch: BatchSpec, *, since: float | None = None) -> SubmittedBatch | None:
        """The provider batch created for `batch` at or after `since` (unix seconds), if any,
        returned with `reconciled=True`."""

    def mark_taken(self, provider_batch_ids: Iterable[str]) -> None:
        """Provider batches that already belong to other Forge batches, so that `find_submitted` never
        returns them. A port that finds its batch by Forge's own metadata (OpenAI) needs none of this."""
        return None

    @abstractmethod
    def status(self, provider_batch_id: str) -> BatchStatus:
        """The batch's normalised state and request counts."""

    @abstractmethod
    def results(self, provider_batch_id: str, expected_custom_ids: Collection[str]) -> list[ResultItem]:
        """One item per expected custom_id, matched by custom_id (see `results.match_results`)."""

    @abstractmethod
    def cancel(self, provider_batch_id: str) -> BatchStatus:
        """Ask the provider to cancel; returns the status right after the request."""

    # -- realtime ----------------------------------------------------------------------------------
    @abstractmethod
    def complete(self, request: ProviderRequest) -> ResultItem:
        """One realtime call. Returns a SUCCEEDED item; raises a classified `ProviderError` on failure."""

    @abstractmethod
    async def acomplete(self, request: ProviderRequest) -> ResultItem:
        """`complete` on the provider's async client."""

    @abstractmethod
    def close(self) -> None:
        """Release the HTTP clients."""

    # -- provider storage --------------------------------------------------------------------------
    def release_batch(self, provider_batch_id: str) -> list[str]:
        """Delete what the provider keeps for an ended batch whose lines Forge has stored (OpenAI: its
        input, output and error files; Anthropic: nothing until pruned). Returns what was deleted; what is
        gone already counts as deleted. Only call once every line of the batch is stored."""
        return []

    def forget_batch(self, provider_batch_id: str) -> bool:
        """Delete the ended batch itself where the provider allows it (Anthropic); False where it does not."""
        return False

    def forge_uploads(self) -> list[tuple[str, str, float]]:
        """(file id, filename, created_at) of batch input files Forge uploaded that the provider still holds."""
        return []

    def delete_file(self, file_id: str) -> bool:
        """Delete one uploaded file; True when it is gone (deleted now or before)."""
        return False

    def _new_async_client(self) -> Any:
        """A new async SDK client (AsyncOpenAI / AsyncAnthropic) with `_client_kwargs`."""
        raise NotImplementedError

    def _async_client(self) -> Any:
        """The async client for the running event loop (a new one if the loop changed, since pooled
        connections belong to the loop that opened them)."""
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is not loop:
            self._aclient, self._aclient_loop = self._new_async_client(), loop
        return self._aclient

    async def aclose(self) -> None:
        """Release the async client (if made on this loop), then the sync one."""
        if self._aclient is not None and self._aclient_loop is asyncio.get_running_loop():
            await self._aclient.close()
        self._aclient, self._aclient_loop = None, None
        self.close()

    def __enter__(self) -> ProviderPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _may_have_created(error: ProviderError) -> bool:
    """A create may have taken effect on timeouts, dropped connections and server errors."""
    if error.ambiguous:
        return True
    return error.error_class == ErrorClass.TRANSIENT and (error.status_code or 0) >= 500


def split_known_kwargs(method: Any, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a raw request body into the SDK method's keyword arguments and `extra_body`, so fields the
    SDK does not know yet still reach the provider."""
    params = _parameter_names(getattr(method, "__func__", method))
    known = {k: v for k, v in body.items() if k in params}
    extra = {k: v for k, v in body.items() if k not in known}
    return known, extra


@functools.lru_cache(maxsize=64)
def _parameter_names(function: Any) -> frozenset[str]:
    """The keyword arguments an SDK method takes (inspect.signature costs ~0.1 ms: once per method)."""
    reserved = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
    return frozenset(inspect.signature(function).parameters) - reserved


async def post_json(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST `body` as it is through the SDK's async client (`client.post`, the SDKs' documented way to
    any endpoint) and the answer's JSON. Same client, headers, timeout and typed errors as the resource
    methods, without their per-call transform of the body against the SDK's typed params (about a third
    of a realtime call's CPU) nor a response model."""
    return json.loads(await client.post(path, body=body, cast_to=bytes))


def non_streaming(body: dict[str, Any]) -> dict[str, Any]:
    """`body` unchanged; refuses streaming bodies, which the port does not consume."""
    if body.get("stream"):
        raise ValueError("realtime requests through the port are non-streaming; drop `stream` from the body")
    return body
