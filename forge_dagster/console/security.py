"""The console's guard: who may read (anyone on 127.0.0.1 without a token; only token holders once
`FORGE_CONSOLE_TOKEN` is set, which any other bind address requires), who may act (token holders with a
CSRF token bound to their session), and headers that keep a model's answer from ever running as script.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

SESSION_COOKIE = "forge_console"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

# No script may run on any page (the console sends none): a model's `<script>` that slipped past the
# escaping would still be inert. Styles are inline in the pages; images are the console's own or data:.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send `Origin: null` on our own forms
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ConsoleRefused(Exception):
    """The console cannot start as asked (a wide bind address without a token)."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse any bind address but loopback unless a token guards the console."""
    if not is_loopback(host) and not token:
        raise ConsoleRefused(f"binding {host} exposes the console beyond this machine: set FORGE_CONSOLE_TOKEN "
                             "(every request then needs it) or bind 127.0.0.1")


class Guard:
    """Sessions and CSRF tokens derived from the console token and a key made when the process starts."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        self._key = secrets.token_bytes(32)

    def _mac(self, *parts: str) -> str:
        return hmac.new(self._key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    def token_matches(self, offered: str | None) -> bool:
        return bool(self.token and offered) and hmac.compare_digest(offered.encode(), self.token.encode())

    def new_session(self) -> str:
        """A session cookie value for someone who gave the token: a nonce and its MAC (never the token)."""
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._mac('session', nonce)}"

    def session_valid(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        nonce, mac = cookie.split(".", 1)
        return hmac.compare_digest(mac, self._mac("session", nonce))

    def authenticated(self, request: Request) -> bool:
        """Whoever holds the token: by its session cookie, or `Authorization: Bearer <token>`."""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self.token_matches(auth[7:].strip()):
            return True
        return self.session_valid(request.cookies.get(SESSION_COOKIE))

    def may_read(self, request: Request) -> bool:
        return self.token is None or self.authenticated(request)

    def csrf_token(self, request: Request) -> str:
        """The form token of this session (empty without one: such a visitor cannot act)."""
        session = request.cookies.get(SESSION_COOKIE)
        return self._mac("csrf", session) if self.session_valid(session) else ""

    def may_act(self, request: Request, form_csrf: str | None) -> str | None:
        """None when the action may go ahead, else why not."""
        if self.token is None:
            return "actions need FORGE_CONSOLE_TOKEN: set it, restart the console and sign in"
        if not self.authenticated(request):
            return "sign in with the console token first"
        if not same_origin(request):
            return "the form came from another site"
        expected = self.csrf_token(request)
        if not expected or not form_csrf or not hmac.compare_digest(expected, form_csrf):
            return "the form's CSRF token does not match this session: reload the page and try again"
        return None


def same_origin(request: Request) -> bool:
    """An Origin (or Referer) header, when the browser sends one, must name this console."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")
