"""The peer for the realtime benchmark: the pattern of the OpenAI cookbook's `api_request_parallel_processor`,
written again from its published description (not copied), on the official `openai` client.

The pattern: read request bodies from a JSONL file one at a time; keep two token buckets, requests and
tokens per minute, which start full and refill continuously up to one minute's worth; send the next
request when both buckets hold enough (a task per request); put failed requests on a retry queue that is
served before new ones, with a bounded number of attempts; after a rate-limit error, pause everything for
15 seconds; the main loop sleeps 1 ms per turn; append each result to an output JSONL file.
One addition, so both sides run under the same limits: at most `max_in_flight` requests in flight
(the cookbook has no such cap; Forge's executor has `concurrency`). The SDK's own retries are off, as in
Forge's ports, so every retry is this loop's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

SECONDS_TO_PAUSE_AFTER_RATE_LIMIT = 15.0
SECONDS_TO_SLEEP_EACH_LOOP = 0.001


@dataclass
class Status:
    started: int = 0
    in_progress: int = 0
    in_flight: int = 0
    succeeded: int = 0
    failed: int = 0
    rate_limit_errors: int = 0
    api_errors: int = 0
    other_errors: int = 0
    last_rate_limit_error: float = 0.0


@dataclass
class Request:
    task_id: int
    body: dict[str, Any]
    tokens: int
    attempts_left: int
    errors: list[str] = field(default_factory=list)


def estimated_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens (about four characters each, plus a few per message) and the completion's budget."""
    prompt = sum(4 + len(str(m.get("content", ""))) // 4 for m in body.get("messages", [])) + 2
    return prompt + int(body.get("max_tokens") or 0)


def _append(path: Path, record: Any) -> None:
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")


async def _call(client: openai.AsyncOpenAI, request: Request, retries: asyncio.Queue, status: Status,
                save: Path) -> None:
    try:
        response = await client.chat.completions.create(**request.body)
    except openai.RateLimitError as exc:
        status.last_rate_limit_error = time.time()
        status.rate_limit_errors += 1
        request.errors.append(str(exc))
    except openai.APIError as exc:
        status.api_errors += 1
        request.errors.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - the pattern records any error and retries
        status.other_errors += 1
        request.errors.append(str(exc))
    else:
        _append(save, [request.body, response.model_dump()])
        status.in_progress -= 1
        status.succeeded += 1
        status.in_flight -= 1
        return
    status.in_flight -= 1
    if request.attempts_left:
        retries.put_nowait(request)
    else:
        _append(save, [request.body, request.errors])
        status.in_progress -= 1
        status.failed += 1


async def process_requests(requests_file: Path, save_file: Path, client: openai.AsyncOpenAI, *,
                           max_requests_per_minute: float, max_tokens_per_minute: float, max_in_flight: int,
                           max_attempts: int = 5) -> Status:
    """Send every request of `requests_file` (one chat.completions body per line); return the counts."""
    retries: asyncio.Queue[Request] = asyncio.Queue()
    status = Status()
    request_capacity, token_capacity = max_requests_per_minute, max_tokens_per_minute
    last_update = time.time()
    pending: Request | None = None
    more = True
    tasks: set[asyncio.Task] = set()
    with requests_file.open() as lines:
        while True:
            if pending is None:
                if not retries.empty():
                    pending = retries.get_nowait()
                elif more:
                    line = next(lines, None)
                    if line is None:
                        more = False
                    else:
                        body = json.loads(line)
                        pending = Request(status.started, body, estimated_tokens(body), max_attempts)
                        status.started += 1
                        status.in_progress += 1
            now = time.time()
            request_capacity = min(request_capacity + max_requests_per_minute * (now - last_update) / 60,
                                   max_requests_per_minute)
            token_capacity = min(token_capacity + max_tokens_per_minute * (now - last_update) / 60,
                                 max_tokens_per_minute)
            last_update = now
            if (pending is not None and request_capacity >= 1 and token_capacity >= pending.tokens
                    and status.in_flight < max_in_flight):
                request_capacity -= 1
                token_capacity -= pending.tokens
                pending.attempts_left -= 1
                status.in_flight += 1
                task = asyncio.create_task(_call(client, pending, retries, status, save_file))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                pending = None
            if status.in_progress == 0:
                break
            await asyncio.sleep(SECONDS_TO_SLEEP_EACH_LOOP)
            since_limit = time.time() - status.last_rate_limit_error
            if since_limit < SECONDS_TO_PAUSE_AFTER_RATE_LIMIT:
                await asyncio.sleep(SECONDS_TO_PAUSE_AFTER_RATE_LIMIT - since_limit)
    return status
