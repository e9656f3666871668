"""The console's ASGI application: the pages and actions of each module behind one guard (a token once
one is set, sign-in, security headers on every answer), served by uvicorn from `forge console`."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from forge_dagster.console import (
    actions,
    pages_batches,
    pages_costs,
    pages_fleet,
    pages_jobs,
    pages_processors,
)
from forge_dagster.console.context import Console, ConsoleConfig, form
from forge_dagster.console.security import SECURITY_HEADERS, SESSION_COOKIE
from forge_dagster.core.secrets import register_secret
from forge_dagster.core.store import ForgeStore

OPEN_PATHS = {"/login", "/healthz"}

__all__ = ["ConsoleConfig", "create_app"]


def create_app(store: ForgeStore, config: ConsoleConfig | None = None) -> Starlette:
    """The console over `store`. The store stays the caller's to close."""
    config = config or ConsoleConfig()
    register_secret(config.token)  # never printed on a page or in a log line
    console = Console(store, config)

    class Guarded(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next) -> Response:
            if request.url.path not in OPEN_PATHS and not console.guard.may_read(request):
                response: Response = RedirectResponse("/login", status_code=303)
            else:
                response = await call_next(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

    def login_page(request: Request):
        return console.render(request, "login.html", failed=False)

    async def login(request: Request):
        fields = await form(request)
        if not console.guard.token_matches(fields.get("token")):
            return console.render(request, "login.html", status_code=403, failed=True)
        response = RedirectResponse("/jobs", status_code=303)
        response.set_cookie(SESSION_COOKIE, console.guard.new_session(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    def healthz(request: Request):
        return Response("ok", media_type="text/plain")

    routes = [Route("/login", login_page), Route("/login", login, methods=["POST"]), Route("/healthz", healthz)]
    for module in (pages_jobs, pages_batches, pages_processors, pages_costs, pages_fleet, actions):
        routes += module.routes(console)
    async def not_found(request: Request, exc: Exception) -> Response:
        return console.error(request, 404, "no such page")

    return Starlette(routes=routes, middleware=[Middleware(Guarded)], exception_handlers={404: not_found})
