"""Stamps: a job's result (or its failure) POSTed to the job's `callback_url` once it is terminal.

The `job.stamp` outbox row is written by the transition itself (a trigger in migration 004), so the
stamp leaves only through the relay: at least once, with the outbox row's id as the idempotency key,
and a receiver that is down gets it later. Only to a destination the callback policy allows
(core/ops/callback_policy.py, checked at send time on the addresses actually connected to); a refused one
ends the row `refused` with its reason, for good. Each POST is signed:

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
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from forge_dagster.core.config import ForgeSettings, load_settings
from forge_dagster.core.ops.callback_policy import (
    CallbackPolicy,
    CallbackRefused,
    Resolver,
    literal_address,
    system_resolver,
)
from forge_dagster.core.store.types import OutboxRow

STAMP_TOPIC = "job.stamp"
SECRET_ENV = "FORGE_CALLBACK_SECRET"
SIGNATURE_HEADER = "X-Forge-Signature"
TIMESTAMP_HEADER = "X-Forge-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_RESPONSE_BYTES = 64 * 1024  # of a receiver's answer; the rest is never read
MAX_ADDRESSES_TRIED = 3  # of a host's checked addresses, when the first ones refuse the connection


class DeliveryError(Exception):
    """A receiver did not take a message; `retry_after_s` when it said when to come back."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, host: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.host = host  # set for connection failures: other messages to this host would fail too


class DeliveryRefused(DeliveryError):
    """The callback policy refuses the destination: a permanent outcome, never retried."""


def idempotency_key(row_id: int) -> str:
    return f"forge-outbox-{row_id}"


def load_callback_secret(forge_home: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The HMAC secret: `FORGE_CALLBACK_SECRET` (in the settings, or in `environ` alone when given), else
    the one kept under FORGE_HOME (made on first use)."""
    return callback_secret_of(load_settings(environ), forge_home)


def callback_secret_of(settings: ForgeSettings, forge_home: Path) -> bytes:
    """The HMAC secret of `settings` (`FORGE_CALLBACK_SECRET`), else the one kept under `forge_home`."""
    if settings.callback_secret and settings.callback_secret.get_secret_value():
        return settings.callback_secret.get_secret_value().encode()
    path = forge_home / "callback_secret"
    if not path.exists():
        # Written whole under a private name, then linked into place: processes starting together all end
        # up reading the one secret that was linked first, never a half-written file.
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".callback_secret.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            draft.unlink()
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
    """POSTs stamps to callback URLs that the policy allows, pinned to the addresses it checked.

    The host is resolved here, every address must be allowed (core/ops/callback_policy.py) and the connection
    goes to one of those addresses, with the original Host header and, for https, the original name as
    TLS SNI and for the certificate check: no second lookup, so a rebinding DNS answer cannot redirect
    the POST. No proxy from the environment (it would resolve again), no redirects, no keep-alive (a
    pooled connection is keyed by address, and two names on one address must not share one). At most
    `max_response_bytes` of an answer are read, within `timeout_s`, then the connection is closed."""

    def __init__(
        self, secret: bytes, *, policy: CallbackPolicy | None = None, resolver: Resolver = system_resolver,
        timeout_s: float = 5.0, max_response_bytes: int = MAX_RESPONSE_BYTES,
        verify: ssl.SSLContext | bool = True, client: httpx.Client | None = None,
    ) -> None:
        self._secret = secret
        self.policy = policy if policy is not None else CallbackPolicy()
        self._resolver = resolver
        self._timeout_s, self._max_response_bytes = timeout_s, max_response_bytes
        self._client = client or httpx.Client(
            timeout=timeout_s, follow_redirects=False, trust_env=False, verify=verify,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"User-Agent": "forge-stamps/1", "Accept-Encoding": "identity"})

    def close(self) -> None:
        self._client.close()

    def destination(self, row: OutboxRow) -> httpx.URL:
        """The row's callback URL; DeliveryRefused when it is not one the policy could ever allow."""
        url = row.payload.get("callback_url")
        problem = self.policy.scheme_problem(str(url)) if url else "the job has no callback_url"
        if problem:
            raise DeliveryRefused(f"job {row.payload.get('job_id')}: {problem}")
        try:
            target = httpx.URL(str(url))
        except httpx.InvalidURL as exc:
            raise DeliveryRefused(f"job {row.payload.get('job_id')}: callback_url is not a URL: {exc}") from None
        if not target.host:
            raise DeliveryRefused(f"job {row.payload.get('job_id')}: callback_url has no host")
        return target

    def send(self, row: OutboxRow) -> None:
        """POST one stamp. Raises DeliveryRefused when the policy refuses the destination (permanent),
        DeliveryError unless the receiver answered 2xx."""
        target = self.destination(row)
        host = target.netloc.decode()
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            addresses = self.policy.resolve_checked(target.raw_host.decode("ascii"), port, self._resolver)
        except CallbackRefused as exc:
            raise DeliveryRefused(f"{host}: {exc}") from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise DeliveryError(f"{host}: cannot resolve: {exc}", host=host) from exc
        body = json.dumps(stamp_body(row), separators=(",", ":"), default=str).encode()
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "Host": host, IDEMPOTENCY_HEADER: idempotency_key(row.id),
                   TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(self._secret, body, ts)}
        named = literal_address(target.host) is None
        extensions = {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" and named else {}
        failure: Exception | None = None
        for address in addresses[:MAX_ADDRESSES_TRIED]:
            request = self._client.build_request("POST", target.copy_with(host=address), content=body,
                                                 headers=headers, extensions=extensions)
            try:
                response = self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent: the next address
                failure = exc
                continue
            except httpx.HTTPError as exc:
                raise DeliveryError(f"{host}: {type(exc).__name__}: {exc}", host=host) from exc
            try:
                head = read_bounded(response, self._max_response_bytes, self._timeout_s)
            except httpx.HTTPError:
                head = b""  # the status is what counts; a body cut short does not undo a 2xx
            finally:
                response.close()
            if not 200 <= response.status_code < 300:
                note = " (redirects are not followed)" if 300 <= response.status_code < 400 else ""
                raise DeliveryError(f"{host}: HTTP {response.status_code}{note} "
                                    f"{head[:200].decode('utf-8', 'replace')}", retry_after_s=_retry_after(response))
            return
        raise DeliveryError(f"{host}: {type(failure).__name__}: {failure}", host=host) from failure


def read_bounded(response: httpx.Response, limit: int, budget_s: float) -> bytes:
    """At most `limit` bytes of a streamed response, read within about `budget_s` (each read is bounded by
    the client's timeout): a receiver answering with a huge or endless body cannot hold the sender."""
    data = bytearray()
    deadline = time.monotonic() + budget_s
    for chunk in response.iter_raw():
        data += chunk
        if len(data) >= limit or time.monotonic() > deadline:
            break
    return bytes(data[:limit])


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None
