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
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from agent_runner.uploads import UploadError, receive_upload

log = logging.getLogger(__name__)

HealthBody = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class ControlSettings:
    workspace_root: Path
    max_upload_bytes: int


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listening: socket.socket, settings: ControlSettings, health: HealthBody) -> None:
        self.settings = settings
        self.health = health
        # bind_and_activate=False: no bind, no listen, and no `getfqdn` lookup
        # (HTTPServer.server_bind does one); the inherited socket replaces the new one.
        super().__init__(listening.getsockname()[:2], ControlHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening
        self.server_address = listening.getsockname()[:2]


class ControlHandler(BaseHTTPRequestHandler):
    server: ControlServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._send_json(200, self.server.health())
        else:
            self._send_json(404, {"error": f"no route for GET {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/v1/uploads":
            self._send_json(404, {"error": f"no route for POST {self.path}"}, close=True)
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            # Chunked bodies are not supported: the size limit is checked up front.
            self._send_json(411, {"error": "Content-Length is required"}, close=True)
            return
        settings = self.server.settings
        try:
            stored = receive_upload(
                self.rfile,
                self.headers.get("Content-Type"),
                int(length_header),
                settings.workspace_root,
                settings.max_upload_bytes,
            )
        except UploadError as error:
            log.warning("upload refused (%d): %s", error.status, error.message)
            # The unread rest of the body would be taken for the next request.
            self._send_json(error.status, {"error": error.message}, close=True)
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
            self._send_json(413, {"error": error}, close=True)
            return False
        return super().handle_expect_100()

    def _send_json(self, status: int, body: dict[str, Any], close: bool = False) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Health probes every 5 s would flood the container log at INFO.
        log.debug("%s %s", self.address_string(), format % args)
