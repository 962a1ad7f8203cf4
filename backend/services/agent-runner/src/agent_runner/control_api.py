"""The control API: `GET /healthz` and `POST /v1/uploads`, served on a socket it is given.

Loopback only: with host networking it binds the host's loopback, so nothing
outside the machine can reach it; with bridge networking (Docker Desktop) it binds
0.0.0.0 inside the container and docker publishes it on the host's 127.0.0.1 only.

The listening socket is made once by the supervisor and inherited by every runner
it forks, so a reloaded runner answers on the same port while the old one stops
accepting: the server here never binds, it serves the socket it is handed. Stdlib
`ThreadingHTTPServer` (a thread per request, so a slow upload never delays a health
probe); the health body comes from a callable, uploads are delegated to `uploads`.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, Callable, cast

from agent_runner.uploads import UploadError, receive_upload

log = logging.getLogger(__name__)

HealthBody = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class ControlSettings:
    workspace_root: Path
    max_upload_bytes: int


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    # server_close() would join every request thread without a bound; a stopping
    # runner waits for them with `wait_for_requests` instead.
    block_on_close = False

    def __init__(self, listening: socket.socket, settings: ControlSettings, health: HealthBody) -> None:
        self.settings = settings
        self.health = health
        self._active_requests = 0
        self._requests_done = threading.Condition()
        # bind_and_activate=False: no bind, no listen, and no `getfqdn` lookup
        # (HTTPServer.server_bind does one); the inherited socket replaces the new one.
        super().__init__(listening.getsockname()[:2], ControlHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening
        self.server_address = listening.getsockname()[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up before the answer (a health probe with a short timeout while
        # the runner starts) is routine, not a traceback for the log.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            log.debug("%s went away before its answer", client_address)
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted here, in the accepting thread, so a request accepted just before
        # shutdown() is waited for too.
        with self._requests_done:
            self._active_requests += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._requests_done:
                self._active_requests -= 1
                self._requests_done.notify_all()

    def wait_for_requests(self, timeout: float) -> bool:
        """After shutdown(): let requests in flight (an upload) finish; False if some outlast `timeout`."""
        with self._requests_done:
            return self._requests_done.wait_for(lambda: self._active_requests == 0, timeout)


class ControlHandler(BaseHTTPRequestHandler):
    server: ControlServer
    # HTTP/1.1 for `Expect: 100-continue` (see handle_expect_100), but every answer
    # closes its connection: a kept-alive connection would go on reaching the runner
    # it was opened to after a reload made it the old one (and hold it open).
    protocol_version = "HTTP/1.1"
    # Per socket operation: a client that connects and goes quiet is dropped.
    timeout = 10

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._send_json(200, self.server.health())
        else:
            self._send_json(404, {"error": f"no route for GET {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/v1/uploads":
            self._send_json(404, {"error": f"no route for POST {self.path}"})
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            # Chunked bodies are not supported: the size limit is checked up front.
            self._send_json(411, {"error": "Content-Length is required"})
            return
        settings = self.server.settings
        try:
            stored = receive_upload(
                cast(BinaryIO, self.rfile),
                self.headers.get("Content-Type"),
                int(length_header),
                settings.workspace_root,
                settings.max_upload_bytes,
            )
        except UploadError as error:
            log.warning("upload refused (%d): %s", error.status, error.message)
            self._send_json(error.status, {"error": error.message})
            return
        log.info("stored %s", ", ".join(f"{f.path} ({f.bytes} B)" for f in stored))
        self._send_json(201, {"stored": [asdict(f) for f in stored]})

    def handle_expect_100(self) -> bool:
        # curl sends `Expect: 100-continue` for large bodies: refuse an oversize
        # upload before the client starts sending it.
        length = self.headers.get("Content-Length", "")
        limit = self.server.settings.max_upload_bytes
        if length.isdigit() and int(length) > limit:
            error = f"body of {length} bytes exceeds the limit of {limit}"
            log.warning("upload refused (413): %s", error)
            self._send_json(413, {"error": error})
            return False
        return super().handle_expect_100()

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Health probes every 5 s would flood the container log at INFO.
        log.debug("%s %s", self.address_string(), format % args)
