"""The console's actions, POST only: retry or cancel a job, cancel a provider batch, promote a processor
version. Each needs the
console token, a CSRF token bound to the session and a reason; each goes through the same engine calls as
`forge jobs`, `forge batches` and `forge processors` (core/ops/operator.py, core/batch/cancel.py, the
registry), which record it: a job's action in its events (actor `operator:console`) and in operator_actions,
a batch cancel in operator_actions and its jobs' events, a promotion in processor_events."""

from __future__ import annotations

from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from forge_dagster.console.context import Console, form
from forge_dagster.core.batch.cancel import THEN_CHOICES, cancel_batch
from forge_dagster.core.ops.operator import OperatorError, cancel_jobs, operator_name, retry_jobs
from forge_dagster.core.platform.registry import load_catalog, promote
from forge_dagster.core.providers.keyring import KeyRing
from forge_dagster.core.providers.quota import KeyPorts
from forge_dagster.core.store.processor_store import RegistryError

ACTOR = "operator:console"
BATCH_CANCEL_WAIT_S = 30.0  # the page waits this long for the provider to end the batch (else the pipeline collects it)


def _done(path: str, message: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?notice={quote(message[:300])}", status_code=303)


def routes(console: Console) -> list[Route]:
    store = console.store

    async def checked(request: Request) -> tuple[dict[str, str], str | None]:
        fields = await form(request)
        refused = console.guard.may_act(request, fields.get("csrf"))
        if refused is None and not fields.get("reason", "").strip():
            refused = "say why (reason): it is recorded with the action"
        return fields, refused

    async def job_action(request: Request):
        fields, refused = await checked(request)
        ref, verb = request.path_params["ref"], request.path_params["verb"]
        if verb not in ("retry", "cancel"):
            return console.error(request, 404, f"no action {verb}")
        if refused:
            return console.error(request, 403, refused)
        action = {"retry": retry_jobs, "cancel": cancel_jobs}[verb]
        try:
            report = action(store, [ref], reason=fields["reason"], actor=operator_name(ACTOR))
        except OperatorError as exc:
            return console.error(request, 409, str(exc))
        changed = ", ".join(f"{i} (was {s})" for i, s in sorted(report.changed.items())) or "nothing"
        return _done(f"/jobs/{quote(ref)}", f"{verb}: {changed}")

    async def batch_cancel(request: Request):
        fields, refused = await checked(request)
        batch_id = request.path_params["batch_id"]
        if refused:
            return console.error(request, 403, refused)
        then = fields.get("then", "requeue")
        if then not in THEN_CHOICES:
            return console.error(request, 409, f"then is requeue or cancel, not {then!r}")
        ports = (console.config.batch_ports or (lambda: KeyPorts(KeyRing.from_env())))()
        try:
            report = await run_in_threadpool(
                cancel_batch, store, load_catalog(store, sync=False), ports, batch_id, then=then,
                reason=fields["reason"], actor=operator_name(ACTOR), wait_s=BATCH_CANCEL_WAIT_S)
        except OperatorError as exc:
            return console.error(request, 409, str(exc))
        said = (f"cancelled at the provider; jobs now {report.by_state() or 'unchanged'}" if report.ended else
                f"asked the provider to cancel; still {report.provider_state}: the pipeline collects it when it ends")
        return _done(f"/batches/{report.batch_id}", said)

    async def promote_version(request: Request):
        fields, refused = await checked(request)
        name, version = request.path_params["name"], request.path_params["version"]
        if refused:
            return console.error(request, 403, refused)
        try:
            previous = promote(store, name, version, actor=operator_name(ACTOR), reason=fields["reason"].strip()[:500])
        except RegistryError as exc:
            return console.error(request, 409, str(exc))
        return _done("/processors", f"{name} {version} is active" + (f", {previous} retired" if previous else ""))

    return [Route("/jobs/{ref}/{verb:str}", job_action, methods=["POST"]),
            Route("/batches/{batch_id}/cancel", batch_cancel, methods=["POST"]),
            Route("/processors/{name}/{version}/promote", promote_version, methods=["POST"])]
