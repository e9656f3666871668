"""A real HTTP receiver for the relay's tests: a callback endpoint and a Slack-like webhook on 127.0.0.1.

It can refuse the next requests (as a receiver that is down), answer slowly, or take a message and then lose
the answer (so the sender must retry what was already taken). It dedupes by idempotency key, as a
careful receiver does, and records everything it saw.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ReceiverState:
    refuse_next: int = 0  # answer 503 without taking the message
    lose_answer_next: int = 0  # take the message, then answer 500 (the sender cannot know it arrived)
    answer_after_s: float = 0.0  # wait this long before handling each request
    seen: list[Seen] = field(default_factory=list)
    accepted: dict[str, Seen] = field(default_factory=dict)  # by idempotency key, first copy only
    duplicates: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Receiver:
    """`url` + '/cb/...' takes stamps; `url` + '/slack' takes webhook messages (keyed by outbox ids)."""

    def __init__(self) -> None:
        self.state = ReceiverState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if state.answer_after_s:
                    time.sleep(state.answer_after_s)  # a slow receiver
                headers = {k.lower(): v for k, v in self.headers.items()}
                key = headers.get("idempotency-key") or "slack:" + headers.get("x-forge-outbox-ids", "")
                with state.lock:
                    if state.refuse_next > 0:
                        state.refuse_next -= 1
                        status = 503
                    else:
                        if key in state.accepted:
                            state.duplicates.append(key)
                        else:
                            state.accepted[key] = Seen(self.path, headers, body, 200)
                        status = 200
                        if state.lose_answer_next > 0:
                            state.lose_answer_next -= 1
                            status = 500
                    state.seen.append(Seen(self.path, headers, body, status))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"receiver trouble")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def refuse(self, n: int) -> None:
        with self.state.lock:
            self.state.refuse_next = n

    def answer_after(self, seconds: float) -> None:
        """Take `seconds` before answering each request."""
        with self.state.lock:
            self.state.answer_after_s = seconds

    def lose_answers(self, n: int) -> None:
        with self.state.lock:
            self.state.lose_answer_next = n

    def accepted(self, prefix: str = "") -> dict[str, Seen]:
        with self.state.lock:
            return {k: v for k, v in self.state.accepted.items() if v.path.startswith(prefix)}

    def slack_messages(self) -> list[Seen]:
        """Webhook messages taken, in arrival order (first copy of each)."""
        with self.state.lock:
            return [s for s in self.state.accepted.values() if s.path.startswith("/slack")]
