"""Anthropic routes: messages, count_tokens and Message Batches (with a working absolute results_url)."""

from __future__ import annotations

import json

from forge_dagster.simulator import answers, anthropic_format
from forge_dagster.simulator.anthropic_batches import validate_requests
from forge_dagster.simulator.app import (
    BadRequest,
    Request,
    Response,
    ambiguous_create,
    error_response,
    json_response,
    route,
)
from forge_dagster.simulator.dice import fingerprint
from forge_dagster.simulator.generation import estimate_tokens
from forge_dagster.simulator.state import SimState


def _object(req: Request) -> dict:
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def message_tokens(req: Request) -> int:
    try:
        return estimate_tokens(anthropic_format.input_text(json.loads(req.body)))
    except (ValueError, AttributeError, TypeError):
        return 0


def create_message(state: SimState, req: Request) -> Response:
    params = _object(req)
    fp = fingerprint(params)
    occurrence = state.occurrence("message", fp, state.content_faults_on())
    status, body, gen = answers.anthropic_message(state, params, fp, occurrence, key=req.key or "")
    if gen is not None:
        state.quota.spend("anthropic", req.key or "", gen.input_tokens + gen.output_tokens)
        if gen.faults:
            req.extra["fault"] = ",".join(gen.faults)
    return json_response(body, status)


def count_tokens(state: SimState, req: Request) -> Response:
    params = _object(req)
    if not params.get("model") or not isinstance(params.get("messages"), list):
        return error_response("anthropic", 400, "model and messages are required")
    return json_response({"input_tokens": estimate_tokens(anthropic_format.input_text(params))})


def create_batch(state: SimState, req: Request) -> Response:
    body = _object(req)
    requests = body.get("requests")
    problem = validate_requests(requests)
    if problem:
        return error_response("anthropic", 400, problem)
    batch = state.anthropic.create(requests, req.key or "")
    req.extra.update(batch_id=batch.id, custom_ids=[r["custom_id"] for r in requests])
    return ambiguous_create(state, req, fingerprint(requests), json_response(batch.to_dict(req.base_url)))


def _not_found(batch_id: str) -> Response:
    return error_response("anthropic", 404, f"message batch {batch_id!r} not found")


def get_batch(state: SimState, req: Request, batch_id: str) -> Response:
    batch = state.anthropic.get(batch_id)
    return _not_found(batch_id) if batch is None else json_response(batch.to_dict(req.base_url))


def list_batches(state: SimState, req: Request) -> Response:
    limit = req.int_param("limit", 20, 1, 1000)
    page, more = state.anthropic.listing(limit, req.query.get("after_id"), req.query.get("before_id"))
    data = [b.to_dict(req.base_url) for b in page]
    return json_response({"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None})


def cancel_batch(state: SimState, req: Request, batch_id: str) -> Response:
    batch = state.anthropic.cancel(batch_id)
    return _not_found(batch_id) if batch is None else json_response(batch.to_dict(req.base_url))


def delete_batch(state: SimState, req: Request, batch_id: str) -> Response:
    deleted = state.anthropic.delete(batch_id)
    if deleted is None:
        return _not_found(batch_id)
    if not deleted:
        return error_response("anthropic", 400, "Message batch is still processing; cancel it before deleting.")
    return json_response({"id": batch_id, "type": "message_batch_deleted"})


def batch_results(state: SimState, req: Request, batch_id: str) -> Response:
    data = state.anthropic.results_jsonl(batch_id)
    if data is None:
        return error_response("anthropic", 404, f"results for message batch {batch_id!r} are not available "
                              "(unknown batch, or it has not ended)")
    return Response(200, data, "application/x-jsonl")


ROUTES = [
    route("POST", "/v1/messages", "anthropic", create_message, kind="inference", tokens=message_tokens),
    route("POST", "/v1/messages/count_tokens", "anthropic", count_tokens),
    route("POST", "/v1/messages/batches", "anthropic", create_batch, kind="batch_create"),
    route("GET", "/v1/messages/batches", "anthropic", list_batches),
    route("GET", "/v1/messages/batches/{batch_id}", "anthropic", get_batch),
    route("DELETE", "/v1/messages/batches/{batch_id}", "anthropic", delete_batch),
    route("POST", "/v1/messages/batches/{batch_id}/cancel", "anthropic", cancel_batch),
    route("GET", "/v1/messages/batches/{batch_id}/results", "anthropic", batch_results),
]
