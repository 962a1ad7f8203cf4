"""HTTP client for the stigmer-server runner API (see the backend contract).

Uses `http.client` (the layer under `urllib`) rather than `urllib.request` because
shutdown needs to interrupt a long poll: every open connection is tracked so
`abort()` can shut its socket down and the blocked call returns at once.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any

# Socket timeout on top of the server-side wait, so a poll that the server holds
# for its full `wait_seconds` is not mistaken for a dead backend.
TIMEOUT_MARGIN_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 5.0


class BackendUnreachable(Exception):
    """The backend could not be reached or did not answer in time."""


class BackendError(Exception):
    """The backend answered with an unexpected status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class LeaseLost(BackendError):
    """409: the lease is no longer current; another runner may own the task."""


@dataclass(frozen=True)
class Task:
    execution_id: str
    agent: str
    input: str
    lease_id: str
    lease_seconds: int
    attempt: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(
            execution_id=str(data["execution_id"]),
            agent=str(data["agent"]),
            input=str(data.get("input") or ""),
            lease_id=str(data["lease_id"]),
            lease_seconds=int(data.get("lease_seconds") or 30),
            attempt=int(data.get("attempt") or 1),
        )


class BackendClient:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._aborted = False

    def healthz(self) -> None:
        self._request("GET", "/healthz", None, REQUEST_TIMEOUT_SECONDS)

    def poll(self, queue: str, runner_id: str, wait_seconds: int) -> Task | None:
        status, data = self._request(
            "POST",
            f"/v1/task-queues/{queue}/poll",
            {"runner_id": runner_id, "wait_seconds": wait_seconds},
            wait_seconds + TIMEOUT_MARGIN_SECONDS,
        )
        if status == 204 or data is None:
            return None
        try:
            return Task.from_json(data)
        except (KeyError, TypeError, ValueError) as error:
            raise BackendError(status, f"malformed task {data!r}: {error}") from None

    def post_event(self, execution_id: str, lease_id: str, kind: str, message: str) -> None:
        body = {"lease_id": lease_id, "kind": kind, "message": message}
        self._request("POST", f"/v1/executions/{execution_id}/events", body, REQUEST_TIMEOUT_SECONDS)

    def heartbeat(self, execution_id: str, lease_id: str) -> None:
        body = {"lease_id": lease_id}
        self._request("POST", f"/v1/executions/{execution_id}/heartbeat", body, REQUEST_TIMEOUT_SECONDS)

    def complete(
        self, execution_id: str, lease_id: str, result: str | None, error: str | None
    ) -> None:
        body = {
            "lease_id": lease_id,
            "status": "failed" if error is not None else "succeeded",
            "result": result,
            "error": error,
        }
        self._request("POST", f"/v1/executions/{execution_id}/complete", body, REQUEST_TIMEOUT_SECONDS)

    def abort(self) -> None:
        """Interrupt every request in flight and refuse new ones (used on shutdown)."""
        with self._lock:
            self._aborted = True
            for connection in self._open:
                if connection.sock is not None:
                    try:
                        connection.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed by the other side

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float
    ) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        with self._lock:
            if self._aborted:
                raise BackendUnreachable("client stopped")
            self._open.add(connection)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise BackendUnreachable(f"{method} {path}: {error or type(error).__name__}") from None
        finally:
            with self._lock:
                self._open.discard(connection)
            connection.close()
        data = _decode(raw)
        if response.status == 409:
            raise LeaseLost(409, _error_message(data, raw))
        if not 200 <= response.status < 300:
            raise BackendError(response.status, _error_message(data, raw))
        return response.status, data


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _error_message(data: Any, raw: bytes) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return raw[:200].decode("utf-8", errors="replace")
