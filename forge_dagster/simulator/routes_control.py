"""The Slack incoming-webhook receiver and the simulator's own control endpoints (/_sim/*)."""

from __future__ import annotations

import json

from forge_dagster.simulator.app import BANNER, Request, Response, json_response, route
from forge_dagster.simulator.state import SimState


def slack_webhook(state: SimState, req: Request) -> Response:
    """Record the JSON body and answer 200 "ok", as Slack does."""
    try:
        payload = json.loads(req.body or b"")
    except ValueError:
        return Response(400, b"invalid_payload", "text/plain; charset=utf-8")
    if not isinstance(payload, dict) or not any(k in payload for k in ("text", "blocks", "attachments")):
        return Response(400, b"no_text", "text/plain; charset=utf-8")
    state.add_slack(payload)
    return Response(200, b"ok", "text/plain; charset=utf-8")


def get_config(state: SimState, req: Request) -> Response:
    return json_response(state.config.to_dict())


def post_config(state: SimState, req: Request) -> Response:
    knobs = req.json() or {}
    if not isinstance(knobs, dict):
        return json_response({"error": "expected a JSON object of knobs"}, 400)
    try:
        config = state.configure(**knobs)
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    return json_response(config.to_dict())


def reset(state: SimState, req: Request) -> Response:
    state.reset()
    return json_response({"reset": True})


def requests_log(state: SimState, req: Request) -> Response:
    return json_response(state.requests())


def slack_log(state: SimState, req: Request) -> Response:
    return json_response(state.slack_messages())


def refill_quota(state: SimState, req: Request) -> Response:
    state.quota.refill()
    return json_response({"refilled": True})


def banner(state: SimState, req: Request) -> Response:
    return Response(200, f"{BANNER} (seed {state.seed})\n".encode(), "text/plain; charset=utf-8")


ROUTES = [
    route("POST", "/slack/webhook", "slack", slack_webhook),
    route("POST", "/slack/webhook/{rest}", "slack", slack_webhook),
    route("GET", "/_sim/config", "control", get_config),
    route("POST", "/_sim/config", "control", post_config),
    route("POST", "/_sim/reset", "control", reset),
    route("GET", "/_sim/requests", "control", requests_log),
    route("GET", "/_sim/slack", "control", slack_log),
    route("POST", "/_sim/quota/refill", "control", refill_quota),
    route("GET", "/", "control", banner),
]
