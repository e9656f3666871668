"""Keep API keys out of logs, messages and reprs.

Secrets are registered once (from the environment, or by whoever holds a key, e.g. a provider port) and
then scrubbed wherever text leaves the process: `scrub` for messages we build, `SecretRedactingFilter`
for log records, `mask_secret` for anything shown to an operator.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

from forge_dagster.core.config import load_settings

ENV_SECRET_NAMES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
_MIN_SECRET_LEN = 8  # shorter values are too likely to match ordinary text; they are masked, not scrubbed
_KEY_PREFIX_RE = re.compile(r"^(sk-ant-|sk-proj-|sk-)")

_lock = threading.Lock()
_secrets: set[str] = set()


def mask_secret(value: str | None) -> str:
    """A display form of a key: its well-known prefix and at most the last 4 characters (`sk-…a1b2`).

    Short values show no characters at all.
    """
    if not value:
        return "<unset>"
    prefix_match = _KEY_PREFIX_RE.match(value)
    prefix = prefix_match.group(1) if prefix_match else ""
    if len(value) < 16:
        return f"{prefix}…" if prefix else "…"
    return f"{prefix}…{value[-4:]}"


def register_secret(value: str | None) -> None:
    """Remember `value` so that `scrub` and the logging filter replace it from now on."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def register_env_secrets(names: Iterable[str] = ENV_SECRET_NAMES) -> None:
    """Register the values of the API-key environment variables that are set (as the settings read them)."""
    environ = load_settings().provider_environ
    for name in names:
        register_secret(environ.get(name))


def registered_secrets() -> list[str]:
    """The registered secrets, longest first (so a key containing another is replaced whole)."""
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by its masked form."""
    if not text:
        return text
    for secret in registered_secrets():
        if secret in text:
            text = text.replace(secret, mask_secret(secret))
    return text


class SecretRedactingFilter(logging.Filter):
    """Rewrites log records so no registered secret reaches a handler; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = registered_secrets()
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the handler's problem, not ours
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_redaction(logger: logging.Logger | None = None) -> SecretRedactingFilter:
    """Register the env keys and attach one `SecretRedactingFilter` to every handler of `logger` (root
    by default). Idempotent: a handler that already has the filter is left alone."""
    register_env_secrets()
    target = logger or logging.getLogger()
    existing = next(
        (f for h in target.handlers for f in h.filters if isinstance(f, SecretRedactingFilter)), None
    )
    redactor = existing or SecretRedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, SecretRedactingFilter) for f in handler.filters):
            handler.addFilter(redactor)
    return redactor
