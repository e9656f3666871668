"""Time filters an operator types: `--since` as an ISO time or an age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """An ISO date or time (UTC when it names no zone), or an age such as 30m, 6h, 2d; None for nothing."""
    if not text:
        return None
    text = text.strip()
    if text[-1:] in _UNITS and text[:-1].isdigit():
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[text[-1]]: int(text[:-1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since {text!r}: give an ISO time (2026-12-01T08:00) or an age (30m, 6h, 2d)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
