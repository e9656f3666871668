"""The console's live fleet page: who is alive (workers, runs, daemons), what each holds, takeovers,
outbox lag, the last night, and the diagram with these numbers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from forge_dagster.console.context import Console
from forge_dagster.console.fleet import diagram, read_fleet


def routes(console: Console) -> list[Route]:
    def fleet(request: Request):
        state = read_fleet(console.store, with_dagster=console.config.dagster_daemons)
        return console.render(request, "fleet.html", fleet=state, diagram=diagram(state))

    return [Route("/fleet", fleet)]
