"""The control API: `GET /healthz` and `POST /v1/uploads`.

Loopback only: with host networking it binds the host's loopback, so nothing
outside the machine can reach it; with bridge networking (Docker Desktop) it binds
0.0.0.0 inside the container and docker publishes it on the host's 127.0.0.1 only. Stdlib `ThreadingHTTPServer` keeps the runtime
small; uploads are delegated to `uploads`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent_runner.uploads import UploadError, receive_upload
from agent_runner.worker import BackendStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlSettings:
    backend_endpoint: str
    task_queue: str
    workspace_root: Path
    max_upload_bytes: int


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, settings: ControlSettings, status: BackendStatus) -> None:
        self.settings = settings
        self.status = status
        self.started_at = time.monotonic()
        super().__init__((host, port), ControlHandler)


class ControlHandler(BaseHTTPRequestHandler):
    server: ControlServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._send_json(200, self._health())
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

    def _health(self) -> dict[str, Any]:
        reachable, last_error = self.server.status.snapshot()
        settings = self.server.settings
        return {
            "status": "ok",
            "uptime_seconds": round(time.monotonic() - self.server.started_at, 3),
            "backend": {
                "endpoint": settings.backend_endpoint,
                "reachable": reachable,
                "last_error": last_error,
            },
            "uid": os.getuid(),
            "task_queue": settings.task_queue,
        }

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
