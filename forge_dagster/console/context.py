"""What every page of the console shares: the store, the guard, the templates and how a page is rendered
(autoescaped, every value scrubbed of registered secrets) and how request input is read."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from forge_dagster.console.security import Guard
from forge_dagster.core.secrets import scrub
from forge_dagster.core.store import ForgeStore

MAX_FORM_BYTES = 64 * 1024


@dataclass
class ConsoleConfig:
    """How the console runs: its token (None: read-only on loopback), where Dagster's UI is."""

    token: str | None = None
    dagster_url: str | None = None  # links to runs; None: no links
    dagster_daemons: bool = False  # read the daemons' heartbeats from Dagster's instance (DAGSTER_HOME)
    batch_ports: Callable[[], Mapping[Any, Any]] | None = None  # provider ports for a batch cancel (None: the
    # keys of the environment, the simulator when none is set)


def _scrubbed(value: Any) -> Any:
    """Every value a template prints: None as empty, text with registered secrets removed."""
    if value is None:
        return ""
    return scrub(value) if isinstance(value, str) else value


def pretty(value: Any) -> str:
    """JSON (or text that holds JSON) indented for reading; other text as it is."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = (datetime.now(UTC) - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def money(value: Any) -> str:
    return "" if value is None else f"${float(value):,.4f}"


def when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def make_templates() -> Environment:
    env = Environment(loader=PackageLoader("forge_dagster.console", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      finalize=_scrubbed, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pretty=pretty, ago=ago, money=money, when=when)
    return env


class Console:
    """The console's shared state, handed to every page module."""

    def __init__(self, store: ForgeStore, config: ConsoleConfig) -> None:
        self.store, self.config = store, config
        self.guard = Guard(config.token)
        self.templates = make_templates()

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        page = self.templates.get_template(template).render(
            request=request, csrf=self.guard.csrf_token(request), signed_in=self.guard.authenticated(request),
            token_set=self.guard.token is not None, dagster_url=self.config.dagster_url, **context)
        return HTMLResponse(page, status_code=status_code)

    def error(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status_code=status_code, message=message)


# -- request input -------------------------------------------------------------------------------
def text_arg(request: Request, name: str, *, limit: int = 200) -> str | None:
    value = (request.query_params.get(name) or "").strip()
    return value[:limit] or None


def int_arg(request: Request, name: str) -> int | None:
    value = text_arg(request, name, limit=18)
    return int(value) if value and value.isdigit() else None


def time_arg(request: Request, name: str) -> datetime | None:
    """An ISO time (naive is UTC) or an age such as `6h`, `30m`, `2d`; None when absent or unreadable."""
    value = text_arg(request, name, limit=40)
    if not value:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console's forms post nothing else), first value of each field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def query_with(request: Request, **changes: Any) -> str:
    """This page's query string with some parameters changed (None drops one)."""
    params = {k: v for k, v in request.query_params.multi_items()}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    return "?" + urlencode(params) if params else "?"


def number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value
