"""A real HTTP receiver for the relay's tests: a callback endpoint and a Slack-like webhook on 127.0.0.1
(or another loopback address, IPv6 included).

It can refuse the next requests (as a receiver that is down), answer slowly, take a message and then lose
the answer (so the sender must retry what was already taken), or answer with a huge body. It dedupes by
idempotency key, as a careful receiver does, and records everything it saw and how many requests it
held at once.
"""

from __future__ import annotations

import json
import socket
import ssl
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
    gate: threading.Event | None = None  # while set to an unset event, requests wait for it (held)
    answer_body_bytes: int = 0  # answer with a body this big (written in chunks) instead of "ok"
    body_written: int = 0  # bytes of the big bodies written before the reader went away
    body_cut: int = 0  # big bodies whose reader closed the connection before the end
    in_flight: int = 0
    max_in_flight: int = 0
    seen: list[Seen] = field(default_factory=list)
    accepted: dict[str, Seen] = field(default_factory=dict)  # by idempotency key, first copy only
    duplicates: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Receiver:
    """`url` + '/cb/...' takes stamps; `url` + '/slack' takes webhook messages (keyed by outbox ids)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        self.state = ReceiverState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                with state.lock:
                    state.in_flight += 1
                    state.max_in_flight = max(state.max_in_flight, state.in_flight)
                try:
                    self._handle()
                finally:
                    with state.lock:
                        state.in_flight -= 1

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gate = state.gate
                if gate is not None:
                    gate.wait(30)  # held until the test lets go (bounded, so a failing test still ends)
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
                if state.answer_body_bytes:
                    self._write_big_body(state.answer_body_bytes)
                    return
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"receiver trouble")

            def _write_big_body(self, size: int) -> None:
                """`size` bytes in 64 KiB chunks, a little at a time, counting what got out."""
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk, written = b"x" * 65536, 0
                try:
                    while written < size:
                        self.wfile.write(chunk[: size - written])
                        self.wfile.flush()
                        written += min(len(chunk), size - written)
                        time.sleep(0.002)  # a receiver streaming its answer, not a burst the kernel buffers
                except OSError:
                    with state.lock:
                        state.body_cut += 1
                finally:
                    with state.lock:
                        state.body_written += written

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self.host, self.scheme = host, "https" if tls else "http"
        self._server = Server((host, port), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

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

    def hold(self) -> threading.Event:
        """Hold every request until the returned event is set."""
        with self.state.lock:
            self.state.gate = threading.Event()
            return self.state.gate

    def answer_with_body(self, size: int) -> None:
        """Answer every request with a body of `size` bytes, streamed."""
        with self.state.lock:
            self.state.answer_body_bytes = size

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
