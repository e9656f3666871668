"""OpenAI routes: files, batches, chat completions, responses, embeddings, moderations and models (plus the
Anthropic view of /v1/models)."""

from __future__ import annotations

import json
from typing import Any

from forge_dagster.simulator import answers, openai_endpoints, openai_format
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
from forge_dagster.simulator.openai_batches import ENDPOINTS, BatchInputError, parse_batch_file
from forge_dagster.simulator.state import SimState

FILE_PURPOSES = frozenset({"batch", "assistants", "fine-tune", "vision", "user_data", "evals"})
OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-5-mini", "o4-mini", "text-embedding-3-small",
                 "text-embedding-3-large", "omni-moderation-latest"]
ANTHROPIC_MODELS = ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"]


def parse_multipart(req: Request) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name -> (filename, bytes)."""
    boundary = req.headers.get_param("boundary")
    if req.headers.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise BadRequest("Expected a multipart/form-data body.")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in req.body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        disposition = next((ln for ln in head.decode("utf-8", "replace").split("\r\n")
                            if ln.lower().startswith("content-disposition")), "")
        msg_params = dict(_disposition_params(disposition))
        if "name" in msg_params:
            fields[msg_params["name"]] = (msg_params.get("filename"), data.removesuffix(b"\r\n"))
    return fields


def _disposition_params(line: str) -> list[tuple[str, str]]:
    out = []
    for piece in line.split(";")[1:]:
        name, _, value = piece.strip().partition("=")
        out.append((name.strip().lower(), value.strip().strip('"')))
    return out


def upload_file(state: SimState, req: Request) -> Response:
    fields = parse_multipart(req)
    purpose = fields.get("purpose", (None, b""))[1].decode().strip()
    if "file" not in fields:
        raise BadRequest("Missing required parameter: 'file'.")
    if purpose not in FILE_PURPOSES:
        raise BadRequest(f"Invalid value for 'purpose': {purpose!r}.")
    filename, data = fields["file"]
    try:
        stored = state.openai.add_file(data, filename or "upload.jsonl", purpose)
    except BatchInputError as exc:
        return error_response("openai", 400, f"Invalid file format for Batch API. {exc}", param="file")
    req.extra["file_id"] = stored.id
    return json_response(stored.to_dict())


def list_files(state: SimState, req: Request) -> Response:
    files = sorted(state.openai.live_files(), key=lambda f: f.created_at, reverse=True)
    purpose = req.query.get("purpose")
    data = [f.to_dict() for f in files if not purpose or f.purpose == purpose]
    return json_response({"object": "list", "data": data, "has_more": False,
                          "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


def _file_or_404(state: SimState, file_id: str) -> Any:
    stored = state.openai.live_file(file_id)
    if stored is None:
        return error_response("openai", 404, f"No such File object: {file_id}", param="id")
    return stored


def get_file(state: SimState, req: Request, file_id: str) -> Response:
    stored = _file_or_404(state, file_id)
    return stored if isinstance(stored, Response) else json_response(stored.to_dict())


def file_content(state: SimState, req: Request, file_id: str) -> Response:
    stored = _file_or_404(state, file_id)
    if isinstance(stored, Response):
        return stored
    return Response(200, stored.data, "application/octet-stream")


def delete_file(state: SimState, req: Request, file_id: str) -> Response:
    stored = state.openai.live_file(file_id)
    with state.lock:
        state.openai.files.pop(file_id, None)
    if stored is None:
        return error_response("openai", 404, f"No such File object: {file_id}", param="id")
    return json_response({"id": file_id, "object": "file", "deleted": True})


def create_batch(state: SimState, req: Request) -> Response:
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    file_id, endpoint = body.get("input_file_id"), body.get("endpoint")
    if body.get("completion_window") != "24h":
        return error_response("openai", 400, "Invalid value for 'completion_window': only '24h' is supported.",
                              param="completion_window")
    if endpoint not in ENDPOINTS:
        return error_response("openai", 400, f"Invalid value for 'endpoint': {endpoint!r} (the simulator serves "
                              f"{', '.join(sorted(ENDPOINTS))}).", param="endpoint")
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16):
        return error_response("openai", 400, "'metadata' must be an object of at most 16 strings.", param="metadata")
    expires = body.get("output_expires_after")
    if expires is not None and (not isinstance(expires, dict) or expires.get("anchor") != "created_at"
                                or not isinstance(expires.get("seconds"), int)
                                or not 3600 <= expires["seconds"] <= 2592000):
        return error_response("openai", 400, "Invalid 'output_expires_after': anchor must be 'created_at' and "
                              "seconds between 3600 and 2592000.", param="output_expires_after")
    source = state.openai.live_file(str(file_id))
    if source is None or source.purpose != "batch":
        return error_response("openai", 400, f"Invalid 'input_file_id': {file_id!r} is not a batch file.",
                              param="input_file_id")
    batch = state.openai.create_batch(source.id, endpoint, "24h", metadata, req.key or "",
                                      expires["seconds"] if expires else None)
    req.extra.update(batch_id=batch.id, custom_ids=[str(ln["custom_id"]) for ln in batch.lines])
    return ambiguous_create(state, req, fingerprint(parse_batch_file(source.data)), json_response(batch.to_dict()))


def get_batch(state: SimState, req: Request, batch_id: str) -> Response:
    batch = state.openai.get(batch_id)
    if batch is None:
        return error_response("openai", 404, f"No batch found with id '{batch_id}'.", param="batch_id")
    return json_response(batch.to_dict())


def list_batches(state: SimState, req: Request) -> Response:
    limit = req.int_param("limit", 20, 1, 100)
    page, more = state.openai.listing(limit, req.query.get("after"))
    data = [b.to_dict() for b in page]
    return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None, "has_more": more})


def cancel_batch(state: SimState, req: Request, batch_id: str) -> Response:
    try:
        batch = state.openai.cancel(batch_id)
    except ValueError as exc:
        return error_response("openai", 400, str(exc))
    if batch is None:
        return error_response("openai", 404, f"No batch found with id '{batch_id}'.", param="batch_id")
    return json_response(batch.to_dict())


def chat_tokens(req: Request) -> int:
    try:
        body = json.loads(req.body)
        return estimate_tokens(openai_format.input_text(body)) + (openai_format.max_tokens(body) or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


def chat_completions(state: SimState, req: Request) -> Response:
    body = req.json()
    fp = fingerprint(body)
    occurrence = state.occurrence("chat", fp, state.content_faults_on())
    status, answer, gen = answers.openai_chat(state, body, fp, occurrence, req.key or "")
    if gen is not None:
        state.quota.spend("openai", req.key or "", gen.input_tokens + gen.output_tokens)
        if gen.faults:
            req.extra["fault"] = ",".join(gen.faults)
    return json_response(answer, status)


def responses_tokens(req: Request) -> int:
    try:
        body = json.loads(req.body)
        return estimate_tokens(openai_endpoints.response_input_text(body)) + int(body.get("max_output_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


def embeddings_tokens(req: Request) -> int:
    try:
        return openai_endpoints.embedding_input_tokens(json.loads(req.body))
    except (ValueError, AttributeError, TypeError):
        return 0


def _endpoint_call(state: SimState, req: Request, url: str) -> Response:
    body = req.json()
    fp = fingerprint(body)
    occurrence = state.occurrence(url, fp, state.content_faults_on())
    status, answer, inp, out = answers.openai_any(state, url, body, fp, occurrence, req.key or "")
    if status == 200:
        state.quota.spend("openai", req.key or "", inp + out)
    return json_response(answer, status)


def responses(state: SimState, req: Request) -> Response:
    return _endpoint_call(state, req, "/v1/responses")


def embeddings(state: SimState, req: Request) -> Response:
    return _endpoint_call(state, req, "/v1/embeddings")


def moderations(state: SimState, req: Request) -> Response:
    return _endpoint_call(state, req, "/v1/moderations")


def _anthropic_model(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z"}


def list_models(state: SimState, req: Request) -> Response:
    if req.provider == "anthropic":
        data = [_anthropic_model(m) for m in ANTHROPIC_MODELS]
        return json_response({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})
    return json_response({"object": "list", "data": [{"id": m, "object": "model", "created": 1735689600,
                                                       "owned_by": "forge-simulator"} for m in OPENAI_MODELS]})


def get_model(state: SimState, req: Request, model_id: str) -> Response:
    if req.provider == "anthropic":
        return json_response(_anthropic_model(model_id))
    return json_response({"id": model_id, "object": "model", "created": 1735689600, "owned_by": "forge-simulator"})


ROUTES = [
    route("POST", "/v1/files", "openai", upload_file),
    route("GET", "/v1/files", "openai", list_files),
    route("GET", "/v1/files/{file_id}", "openai", get_file),
    route("GET", "/v1/files/{file_id}/content", "openai", file_content),
    route("DELETE", "/v1/files/{file_id}", "openai", delete_file),
    route("POST", "/v1/batches", "openai", create_batch, kind="batch_create"),
    route("GET", "/v1/batches", "openai", list_batches),
    route("GET", "/v1/batches/{batch_id}", "openai", get_batch),
    route("POST", "/v1/batches/{batch_id}/cancel", "openai", cancel_batch),
    route("POST", "/v1/chat/completions", "openai", chat_completions, kind="inference", tokens=chat_tokens),
    route("POST", "/v1/responses", "openai", responses, kind="inference", tokens=responses_tokens),
    route("POST", "/v1/embeddings", "openai", embeddings, kind="inference", tokens=embeddings_tokens),
    route("POST", "/v1/moderations", "openai", moderations, kind="inference"),
    route("GET", "/v1/models", "dual", list_models),
    route("GET", "/v1/models/{model_id}", "dual", get_model),
]
