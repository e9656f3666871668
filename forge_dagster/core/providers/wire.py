"""The bytes each provider's batch format puts on the wire for one request.

Shaping uses `encoded_size` to keep batches under the provider's byte limit; the ports use the same
functions to build what they upload, so the two never disagree.
"""

from __future__ import annotations

import json
from typing import Any

from forge_dagster.core.models import OPENAI_URLS, Provider, ProviderRequest

OPENAI_BATCH_ENDPOINT = OPENAI_URLS["chat"]


def openai_url(endpoint: str) -> str:
    """The OpenAI path of an endpoint (`chat` -> /v1/chat/completions); ValueError for one OpenAI lacks."""
    try:
        return OPENAI_URLS[endpoint]
    except KeyError:
        raise ValueError(f"OpenAI has no {endpoint!r} endpoint") from None


def openai_batch_line(request: ProviderRequest) -> dict[str, Any]:
    """One line of an OpenAI Batch API input file (its `url` is the request's endpoint)."""
    return {"custom_id": request.custom_id, "method": "POST", "url": openai_url(request.endpoint),
            "body": request.body}


def anthropic_batch_entry(request: ProviderRequest) -> dict[str, Any]:
    """One entry of an Anthropic Message Batches `requests` array."""
    return {"custom_id": request.custom_id, "params": request.body}


def encode_line(provider: Provider, request: ProviderRequest) -> bytes:
    """The request as one JSON line (with its newline), as it is counted against the byte limit."""
    entry = openai_batch_line(request) if provider == Provider.OPENAI else anthropic_batch_entry(request)
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encoded_size(provider: Provider, request: ProviderRequest) -> int:
    """Bytes this request adds to a batch of `provider`."""
    return len(encode_line(provider, request))
