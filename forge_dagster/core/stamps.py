"""Stamps: a job's result (or its failure) POSTed to the job's `callback_url` once it is terminal.

The `job.stamp` outbox row is written by the transition itself (a trigger in migration 004), so the
stamp leaves only through the relay: at least once, with the outbox row's id as the idempotency key,
and a receiver that is down gets it later. Each POST is signed:

    X-Forge-Timestamp: <unix seconds>
    X-Forge-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" under the callback secret>
    Idempotency-Key: forge-outbox-<row id>

The secret is `FORGE_CALLBACK_SECRET`, or one generated on first use and kept (mode 0600) in
`$FORGE_HOME/callback_secret` for receivers to read. `verify_signature` is what a receiver runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from forge_dagster.core.store.lease_store import OutboxRow

STAMP_TOPIC = "job.stamp"
SECRET_ENV = "FORGE_CALLBACK_SECRET"
SIGNATURE_HEADER = "X-Forge-Signature"
TIMESTAMP_HEADER = "X-Forge-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class DeliveryError(Exception):
    """A receiver did not take a message; `retry_after_s` when it said when to come back."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, host: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.host = host  # set for connection failures: other messages to this host would fail too


def idempotency_key(row_id: int) -> str:
    return f"forge-outbox-{row_id}"


def load_callback_secret(forge_home: Path, environ: dict[str, str] | None = None) -> bytes:
    """The HMAC secret: `FORGE_CALLBACK_SECRET`, else the one kept under FORGE_HOME (made on first use)."""
    env = os.environ if environ is None else environ
    if env.get(SECRET_ENV):
        return env[SECRET_ENV].encode()
    path = forge_home / "callback_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify_signature(
    secret: bytes, body: bytes, timestamp: str | int, signature: str, *, tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """A receiver's check: the signature matches the raw body and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, ts), signature or "")


def stamp_body(row: OutboxRow) -> dict[str, Any]:
    """What the receiver gets: the job, and its result or its failure."""
    p = row.payload
    succeeded = p.get("state") == "succeeded"
    return {
        "event": "job.finished",
        "idempotency_key": idempotency_key(row.id),
        "job": {k: p.get(k) for k in ("job_id", "source", "external_id", "processor", "processor_version", "mode",
                                      "state", "attempt", "finished_at")},
        "result": p.get("output") if succeeded else None,
        "failure": None if succeeded else {"reason": p.get("reason"), "errors": p.get("errors")},
        "usage": p.get("usage"),
        "cost_usd": p.get("cost_usd"),
    }


class StampSender:
    """POSTs stamps to callback URLs over one HTTP client (short timeouts: a slow receiver waits its turn)."""

    def __init__(self, secret: bytes, *, timeout_s: float = 5.0, client: httpx.Client | None = None) -> None:
        self._secret = secret
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False,
                                              headers={"User-Agent": "forge-stamps/1"})

    def close(self) -> None:
        self._client.close()

    def send(self, row: OutboxRow) -> None:
        """POST one stamp; raises DeliveryError unless the receiver answered 2xx."""
        url = row.payload.get("callback_url")
        if not url or not str(url).startswith(("http://", "https://")):
            raise DeliveryError(f"job {row.payload.get('job_id')}: callback_url {url!r} is not an http(s) URL")
        body = json.dumps(stamp_body(row), separators=(",", ":"), default=str).encode()
        ts = int(time.time())
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: idempotency_key(row.id),
                   TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(self._secret, body, ts)}
        host = httpx.URL(url).netloc.decode()
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{host}: {type(exc).__name__}: {exc}", host=host) from exc
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"{host}: HTTP {response.status_code} {response.text[:200]}",
                                retry_after_s=_retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None
