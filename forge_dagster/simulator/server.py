"""The simulator's HTTP server (stdlib ThreadingHTTPServer, HTTP/1.1, daemon threads) and its Python API.

This is a test double, not a provider: nothing here talks to OpenAI, Anthropic, Ollama or Slack.
"""

from __future__ import annotations

import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from forge_dagster.simulator import ollama, routes_anthropic, routes_control, routes_openai
from forge_dagster.simulator.app import BANNER, App, Request, Response
from forge_dagster.simulator.config import SimConfig
from forge_dagster.simulator.state import SimState

_ROUTES = routes_control.ROUTES + routes_anthropic.ROUTES + routes_openai.ROUTES + ollama.ROUTES
MAX_BODY = 512 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ForgeProviderSimulator/1.0"
    timeout = 120  # an idle keep-alive connection is closed after this long
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: the request log is kept by the app (without keys)."""

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        host = self.headers.get("host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        try:
            body = self._read_body()
        except ValueError:
            self._send(Response(413, b"request body too large", "text/plain"))
            self.close_connection = True
            return
        req = Request(self.command, parsed.path, query, self.headers, body, f"http://{host}")
        resp = self.server.app.handle(req)
        if resp.drop:
            self.close_connection = True
            return
        self._send(resp)

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(resp.body)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self._head = True
        self.command = "GET"
        try:
            self._dispatch()
        finally:
            self._head = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, is_open: bool) -> None:
        with self._open_lock:
            (self._open.add if is_open else self._open.discard)(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeouts, killed processes) is routine here, not worth a traceback."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Simulator:
    """A local OpenAI / Anthropic / Ollama / Slack-webhook simulator (a test double, not a provider).

    `Simulator(seed=0, port=0).start()` serves on a free port in a background thread; use it as a context
    manager or call stop(). Knobs: see SimConfig.
    """

    def __init__(self, seed: int = 0, host: str = "127.0.0.1", port: int = 0, config: SimConfig | None = None,
                 **knobs: Any) -> None:
        self.state = SimState(seed, (config or SimConfig()).merged(**knobs))
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is None:
            self._server = _Server(self._address, App(self.state, _ROUTES))
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="forge-simulator", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Bind, print the one-line banner, and serve on the calling thread until interrupted."""
        self._server = _Server(self._address, App(self.state, _ROUTES))
        print(self.banner(), flush=True)
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop serving and close open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def ollama_host(self) -> str:
        return self.url

    @property
    def slack_webhook_url(self) -> str:
        return self.url + "/slack/webhook"

    @property
    def config(self) -> SimConfig:
        return self.state.config

    def configure(self, **knobs: Any) -> SimConfig:
        """Change SimConfig fields at runtime (same as POST /_sim/config)."""
        return self.state.configure(**knobs)

    def reset(self) -> None:
        """Forget batches, files, the request log, Slack messages and counters; keep the config."""
        self.state.reset()

    def requests(self) -> list[dict[str, Any]]:
        """The request log: {ts, method, path, status, provider, key_id, ...}; never an API key."""
        return self.state.requests()

    def slack_messages(self) -> list[Any]:
        """JSON bodies the Slack webhook received, oldest first."""
        return self.state.slack_messages()

    def refill_quota(self) -> None:
        """Reset consumed quota for every key (POST /_sim/quota/refill)."""
        self.state.quota.refill()

    def banner(self) -> str:
        return f"{BANNER} listening on {self.url}"


def serve(host: str = "127.0.0.1", port: int = 8700, seed: int = 0, **knobs: Any) -> None:
    """Run a simulator in the foreground until interrupted (knobs as in SimConfig, or config=SimConfig)."""
    config = knobs.pop("config", None) or SimConfig()
    Simulator(seed=seed, host=host, port=port, config=config, **knobs).serve_forever()
