"""Batch shaping (the builder, once called Anvil): group rendered requests and cut them into provider batches.

Each batch holds one provider, one model and one processor version, and stays within the provider's request
count and byte limits (DESIGN.md section 5). Sizes come from `wire.encoded_size`, the same bytes the ports
upload, and are computed once per request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from forge_dagster.core.models import CUSTOM_ID_RE, LIMITS, BatchSpec, Provider, ProviderRequest
from forge_dagster.core.providers.wire import encoded_size

# Kept free under the provider's byte limit for what wraps the lines: Anthropic sends one JSON document
# ({"requests": [...]}) whose brackets and commas are not counted by per-line sizes.
ENVELOPE_BYTES = 1024
_CUSTOM_ID_PARTS = re.compile(r"^j(0|[1-9][0-9]*)a(0|[1-9][0-9]*)$")


class RequestTooLarge(ValueError):
    """Requests that alone exceed the batch byte limit. `custom_ids` names every one of them (in input
    order); the caller fails those jobs and shapes the rest again."""

    def __init__(self, custom_ids: list[str], sizes: list[int], limit: int) -> None:
        shown = ", ".join(
            f"{cid} ({size} bytes)" for cid, size in zip(custom_ids[:5], sizes[:5], strict=True)
        )
        more = f" and {len(custom_ids) - 5} more" if len(custom_ids) > 5 else ""
        super().__init__(f"request too large for one batch (limit {limit} bytes): {shown}{more}")
        self.custom_ids = custom_ids
        self.custom_id = custom_ids[0]
        self.sizes = sizes
        self.limit = limit


class GroupKey(NamedTuple):
    """What every request of one batch shares."""

    provider: Provider
    model: str
    processor_name: str
    processor_version: str


def group_key(provider: Provider | str, model: str, processor_name: str, processor_version: str) -> GroupKey:
    """The batch group of a request: provider, model and processor name+version."""
    return GroupKey(Provider(provider), model, processor_name, processor_version)


@dataclass(frozen=True)
class ShapedBatch:
    """One provider-compatible batch: requests of a single group, within limits."""

    key: GroupKey
    requests: list[ProviderRequest]
    total_bytes: int

    @property
    def provider(self) -> Provider:
        return self.key.provider

    @property
    def model(self) -> str:
        return self.key.model

    def to_spec(self, forge_batch_id: str) -> BatchSpec:
        """The submit-ready BatchSpec (its `processor` is the processor name)."""
        return BatchSpec(
            forge_batch_id, self.key.provider, self.key.model, self.requests, self.key.processor_name
        )


def custom_id_for(job_id: int, attempt: int) -> str:
    """The request id for a job's attempt, `j{job_id}a{attempt}`; unique per attempt, so a late result
    of an older attempt is never taken for the current one."""
    if any(not isinstance(v, int) or isinstance(v, bool) for v in (job_id, attempt)):
        raise ValueError("job_id and attempt must be integers")
    if job_id < 0 or attempt < 0:
        raise ValueError(f"job_id and attempt must be non-negative, got {job_id}, {attempt}")
    cid = f"j{job_id}a{attempt}"
    if not CUSTOM_ID_RE.fullmatch(cid):
        raise ValueError(f"custom_id {cid!r} is longer than 64 characters")
    return cid


def parse_custom_id(cid: str) -> tuple[int, int]:
    """(job_id, attempt) from a Forge custom_id; ValueError for an id Forge did not make."""
    match = _CUSTOM_ID_PARTS.fullmatch(cid) if isinstance(cid, str) and len(cid) <= 64 else None
    if match is None:
        raise ValueError(f"not a Forge custom_id: {cid!r}")
    return int(match.group(1)), int(match.group(2))


def _caps(provider: Provider, max_requests: int | None, max_bytes: int | None) -> tuple[int, int]:
    limits = LIMITS[Provider(provider)]
    count, size = limits.max_requests, limits.max_bytes - ENVELOPE_BYTES
    for name, cap in (("max_requests", max_requests), ("max_bytes", max_bytes)):
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0):
            raise ValueError(f"{name} must be a positive integer, got {cap!r}")
    return min(count, max_requests or count), min(size, max_bytes or size)


def _check_ids(requests: Iterable[ProviderRequest]) -> None:
    seen: set[str] = set()
    for request in requests:
        cid = request.custom_id
        if cid in seen:
            raise ValueError(f"duplicate custom_id {cid!r}: ids must be unique within a batch")
        if not CUSTOM_ID_RE.fullmatch(cid):
            raise ValueError(f"custom_id {cid!r} does not match {CUSTOM_ID_RE.pattern}")
        seen.add(cid)


def _pack(
    requests: Sequence[ProviderRequest], sizes: Sequence[int], max_count: int, max_size: int
) -> list[tuple[list[ProviderRequest], int]]:
    """Greedy consecutive chunks; assumes every single size fits."""
    chunks: list[tuple[list[ProviderRequest], int]] = []
    current: list[ProviderRequest] = []
    used = 0
    for request, size in zip(requests, sizes, strict=True):
        if current and (len(current) >= max_count or used + size > max_size):
            chunks.append((current, used))
            current, used = [], 0
        current.append(request)
        used += size
    if current:
        chunks.append((current, used))
    return chunks


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # as wire.encode_line writes JSON


def _dumps_size(value: Any) -> int:
    text = _ENCODER.encode(value)
    return len(text) if text.isascii() else len(text.encode())


def _str_size(text: str) -> int:
    encoded = encode_basestring(text)
    return len(encoded) if encoded.isascii() else len(encoded.encode())


def _value_size(value: Any, memo: dict[Any, int], keep: list[Any]) -> int:
    """UTF-8 length of one JSON value as compact JSON. Strings are memoised by value and containers by id,
    so the parts rendered requests share (a system prompt, a processor's response_format or tools) are
    encoded once per memo; `keep` holds every memoised container so its id cannot be reused meanwhile."""
    kind = type(value)
    if kind is str:
        size = memo.get(value, -1)
        if size < 0:
            size = memo[value] = _str_size(value)
        return size
    if kind is int:
        return len(int.__repr__(value))
    if kind is float and value - value == 0:  # finite: json writes float.__repr__
        return len(float.__repr__(value))
    if kind is dict or kind is list:
        size = memo.get(id(value), -1)
        if size < 0:
            size = memo[id(value)] = _dumps_size(value)
            keep.append(value)
        return size
    return _dumps_size(value)


def _objects_size(items: list[Any], memo: dict[Any, int], keep: list[Any]) -> int:
    """The size of a list of flat objects (the `messages`), or -1 when it is something else. Each request
    has its own list, but the strings in it (a system prompt) are shared and encoded once."""
    size = len(items) + 1
    for obj in items:
        if type(obj) is not dict:
            return -1
        size += 1 + len(obj) if obj else 2
        for key, value in obj.items():
            if type(key) is not str:
                return -1
            key_size = memo.get(key, -1)
            if key_size < 0:
                key_size = memo[key] = _str_size(key)
            if type(value) is str:
                part = memo.get(value, -1)
                if part < 0:
                    part = memo[value] = _str_size(value)
            else:
                part = _value_size(value, memo, keep)
            size += key_size + 1 + part
    return size


def _body_size(body: dict[str, Any], memo: dict[Any, int], keep: list[Any]) -> int:
    """UTF-8 length of `body` as compact JSON, as `json.dumps` would write it, composed from the sizes of
    its parts (see `_value_size` and `_objects_size`)."""
    size = 1 + len(body) if body else 2
    for key, value in body.items():
        if type(key) is not str:
            return _dumps_size(body)  # json converts such keys; let it say how
        part = _objects_size(value, memo, keep) if type(value) is list and value else -1
        if part < 0:
            part = _value_size(value, memo, keep)
        size += _value_size(key, memo, keep) + 1 + part
    return size


def _line_size_function(provider: Provider, endpoint: str) -> Any:
    """A fast equivalent of `wire.encoded_size` for `provider` and `endpoint`: the line's fixed framing
    (measured once from wire itself) plus the composed sizes of custom_id and body."""
    memo: dict[Any, int] = {}
    keep: list[Any] = []
    framing = encoded_size(provider, ProviderRequest("x", {}, endpoint)) - _str_size("x") - 2

    def size(request: ProviderRequest) -> int:
        return framing + _str_size(request.custom_id) + _body_size(request.body, memo, keep)

    return size


def _sized(
    provider: Provider, requests: Sequence[ProviderRequest], max_size: int
) -> tuple[list[int], list[tuple[str, int]]]:
    fast = _line_size_function(provider, requests[0].endpoint if requests else "chat")
    # Self-check against the wire format on a sample; any disagreement falls back to the exact encoder.
    sample = (requests[0], requests[-1]) if requests else ()
    if all(fast(r) == encoded_size(provider, r) for r in sample):
        sizes = [fast(r) for r in requests]
    else:
        sizes = [encoded_size(provider, r) for r in requests]
    oversized = [(r.custom_id, s) for r, s in zip(requests, sizes, strict=True) if s > max_size]
    return sizes, oversized


def _raise_oversized(oversized: list[tuple[str, int]], limit: int) -> None:
    if oversized:
        raise RequestTooLarge([cid for cid, _ in oversized], [size for _, size in oversized], limit)


def split_within_limits(
    provider: Provider,
    requests: Sequence[ProviderRequest],
    max_requests: int | None = None,
    max_bytes: int | None = None,
) -> list[list[ProviderRequest]]:
    """Cut `requests` into consecutive chunks, each within `provider`'s limits and the optional tighter caps.
    Order is kept; nothing is lost or duplicated. Raises RequestTooLarge naming every request that cannot
    fit in any batch, and ValueError for a duplicate or malformed custom_id."""
    provider = Provider(provider)
    max_count, max_size = _caps(provider, max_requests, max_bytes)
    _check_ids(requests)
    sizes, oversized = _sized(provider, requests, max_size)
    _raise_oversized(oversized, max_size)
    return [chunk for chunk, _ in _pack(requests, sizes, max_count, max_size)]


def shape_batches(
    items: Iterable[tuple[GroupKey, ProviderRequest]],
    max_requests: int | None = None,
    max_bytes: int | None = None,
) -> list[ShapedBatch]:
    """Group (key, request) pairs by provider, model and processor version, then split each group within
    limits. Groups keep first-seen order, requests keep input order. RequestTooLarge names every oversized
    request across all groups (nothing is shaped then); duplicate custom_ids raise ValueError."""
    groups: dict[GroupKey, list[ProviderRequest]] = {}
    for key, request in items:
        groups.setdefault(key, []).append(request)
    _check_ids(r for requests in groups.values() for r in requests)
    sized: list[tuple[GroupKey, list[ProviderRequest], list[int], int, int]] = []
    oversized: list[tuple[str, int]] = []
    limit = 0
    for key, requests in groups.items():
        max_count, max_size = _caps(key.provider, max_requests, max_bytes)
        sizes, too_big = _sized(key.provider, requests, max_size)
        if too_big:
            limit = max_size
        oversized.extend(too_big)
        sized.append((key, requests, sizes, max_count, max_size))
    _raise_oversized(oversized, limit)
    return [
        ShapedBatch(key, chunk, used)
        for key, requests, sizes, max_count, max_size in sized
        for chunk, used in _pack(requests, sizes, max_count, max_size)
    ]
