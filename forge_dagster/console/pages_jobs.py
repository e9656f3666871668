"""The console's job pages: the filterable, paged list with counts per state, one job's whole story (hot
or archived), and the archive's lists."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from forge_dagster.console.context import Console, int_arg, query_with, text_arg, time_arg
from forge_dagster.core.ops.operator import CANCEL_STATES, RETRY_STATES, OperatorError, job_story
from forge_dagster.core.platform.preview import preview_request
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store.console_store import JOB_STATES, JobFilter

PAGE_SIZE = 50


def job_filter(request: Request) -> JobFilter:
    states = [s for s in (text_arg(request, "state") or "").split(",") if s in JOB_STATES]
    return JobFilter(states=states or None, processor=text_arg(request, "processor"),
                     version=text_arg(request, "version"), batch_id=int_arg(request, "batch"),
                     provider=text_arg(request, "provider"), since=time_arg(request, "since"),
                     until=time_arg(request, "until"), q=text_arg(request, "q"))


def shown_callback(url: str | None) -> str | None:
    """A callback address without its query or credentials (either may carry a receiver's secret)."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path,
                       "…" if parts.query else "", ""))


def rendered_request(console: Console, job: dict[str, Any]) -> dict[str, Any] | None:
    """The request the job's pinned processor version renders for its input, or why there is none."""
    try:
        processor = load_catalog(console.store, sync=False)[(job["processor"], job["processor_version"])]
    except KeyError:
        return {"error": f"{job['processor']} {job['processor_version']} is not in the registry"}
    if processor.handler:
        return {"error": f"a handler step ({processor.handler}): no provider request"}
    try:
        return preview_request(processor, job["payload"] or {})
    except Exception as exc:  # an input the template cannot render: shown, not raised
        return {"error": f"cannot render: {exc}"}


def routes(console: Console) -> list[Route]:
    store = console.store

    def home(request: Request):
        return RedirectResponse("/jobs", status_code=303)

    def jobs(request: Request):
        where = job_filter(request)
        before = int_arg(request, "before")
        rows = store.console.jobs(where, before=before, limit=PAGE_SIZE)
        counts = store.console.job_counts(where)
        more = query_with(request, before=rows[-1]["id"]) if len(rows) == PAGE_SIZE else None
        return console.render(request, "jobs.html", rows=rows, counts=counts, where=where, more=more,
                              states=JOB_STATES, query_with=lambda **kw: query_with(request, **kw),
                              archived=False)

    def job(request: Request):
        ref = request.path_params["ref"]
        try:
            story = job_story(store, ref)
        except OperatorError as exc:
            return console.error(request, 404, str(exc))
        row = story["job"]
        job_id = int(row["id"])
        if row.get("archived") and row.get("batch_id"):
            story["results"] = store.console.archived_results(job_id, int(row["batch_id"]))
        stamps = store.console.stamps(job_id) if row.get("callback_url") else []
        row["callback_url"] = shown_callback(row.get("callback_url"))
        return console.render(request, "job.html", story=story, job=row, stamps=stamps,
                              request_preview=rendered_request(console, row),
                              may_retry=row["state"] in RETRY_STATES and not row.get("archived"),
                              may_cancel=row["state"] in CANCEL_STATES and not row.get("archived"))

    def archive(request: Request):
        where = job_filter(request)
        before = int_arg(request, "before")
        rows = store.console.archived_jobs(where, before=before, limit=PAGE_SIZE)
        batches = store.console.archived_batches(provider=text_arg(request, "provider"), limit=20)
        more = query_with(request, before=rows[-1]["id"]) if len(rows) == PAGE_SIZE else None
        return console.render(request, "archive.html", rows=rows, batches=batches, where=where, more=more,
                              totals=store.operations.archive_totals())

    return [Route("/", home), Route("/jobs", jobs), Route("/jobs/{ref}", job), Route("/archive", archive)]
