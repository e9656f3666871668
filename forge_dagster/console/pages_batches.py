"""The console's batch pages: the list by state and provider (age, counts, cost) and one batch with the
provider's status history, its jobs by outcome, its files and the Dagster runs that worked on it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from forge_dagster.console.context import Console, int_arg, query_with, text_arg
from forge_dagster.core.batch.cancel import CANCELLABLE
from forge_dagster.core.store.console_store import BATCH_STATES

PAGE_SIZE = 50


def partition_key(batch_id: int) -> str:
    """The batch's partition in Dagster (the assets' `provider_batch` partitions)."""
    return f"b{batch_id}"


def routes(console: Console) -> list[Route]:
    store = console.store

    def batches(request: Request):
        states = [s for s in (text_arg(request, "state") or "").split(",") if s in BATCH_STATES]
        provider = text_arg(request, "provider")
        rows = store.console.batches(states=states, provider=provider, before=int_arg(request, "before"),
                                     limit=PAGE_SIZE)
        more = query_with(request, before=rows[-1]["id"]) if len(rows) == PAGE_SIZE else None
        return console.render(request, "batches.html", rows=rows, counts=store.console.batch_counts(),
                              states=BATCH_STATES, state=",".join(states), provider=provider, more=more,
                              query_with=lambda **kw: query_with(request, **kw))

    def batch(request: Request):
        raw = request.path_params["batch_id"]
        batch_id = int(raw) if raw.isdigit() and len(raw) < 18 else None
        found = store.operations.find_batch(batch_id) if batch_id is not None else None
        if not found:
            return console.error(request, 404, f"no batch {raw}")
        partition = partition_key(batch_id)
        return console.render(request, "batch.html", batch=found, history=store.console.batch_history(batch_id),
                              outcomes=store.console.batch_job_states(batch_id),
                              jobs=store.console.batch_jobs(batch_id), runs=store.console.batch_runs(partition),
                              cost=store.batches.cost(batch_id), partition=partition,
                              may_cancel=found["state"] in CANCELLABLE and not found.get("archived"))

    return [Route("/batches", batches), Route("/batches/{batch_id}", batch)]
