"""Progress events to stigmer-server, best effort, and what the runner knows of the server.

`POST http://<STIGMER_BACKEND_ENDPOINT>/v1/executions/{id}/events` with
`{"kind": "status"|"progress", "message": ...}` answers 204 (404 for an unknown
execution, 409 once it has finished). Temporal carries the result; these events only
let `stigmer run` show what is happening, so a server that does not answer is logged
and never fails an agent.

`BackendStatus` is the reachability record `/healthz` reports: every event post
updates it, and a health request refreshes it when it is stale (`probe`), so the
answer never waits for the server.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

import httpx

log = logging.getLogger(__name__)

EventKind = Literal["status", "progress"]

# Loopback calls: anything slower than this is a server in trouble, and an agent
# thread must not sit waiting on it.
EVENT_TIMEOUT_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 1.0


class BackendStatus:
    """Thread-safe reachability record, read by `/healthz`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reachable = False
        self._last_error: str | None = None
        self._checked_at: float | None = None

    def mark_reachable(self) -> None:
        with self._lock:
            self._reachable, self._last_error, self._checked_at = True, None, time.monotonic()

    def mark_unreachable(self, error: str) -> None:
        with self._lock:
            self._reachable, self._last_error, self._checked_at = False, error, time.monotonic()

    def snapshot(self) -> tuple[bool, str | None]:
        with self._lock:
            return self._reachable, self._last_error

    def age_seconds(self) -> float | None:
        """Seconds since the last check, None before the first."""
        with self._lock:
            return None if self._checked_at is None else time.monotonic() - self._checked_at


class ProgressReporter:
    """Posts execution events; shared by every activity thread (httpx's pool is thread-safe)."""

    def __init__(self, backend_url: str, status: BackendStatus) -> None:
        self.backend_url = backend_url
        self.status = status
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def _http(self) -> httpx.Client:
        # Made on first use: an httpx client loads the CA bundle when it is created
        # (about 0.1 s for the first one in a process), and a runner that has not run
        # anything yet, such as a child just started by a reload, should not pay for it.
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(base_url=self.backend_url, timeout=EVENT_TIMEOUT_SECONDS)
            return self._client

    def post(self, execution_id: str, kind: EventKind, message: str) -> bool:
        """True when the server took the event; every failure is a warning, never raised."""
        path = f"/v1/executions/{execution_id}/events"
        try:
            response = self._http().post(path, json={"kind": kind, "message": message})
        except httpx.HTTPError as error:
            reason = f"POST {path}: {error or type(error).__name__}"
            self.status.mark_unreachable(reason)
            log.warning("⚠️  %s event for %s not delivered: %s", kind, execution_id, reason)
            return False
        self.status.mark_reachable()
        if response.status_code == 204:
            return True
        # 404/409 are the server's word on this execution, not a connectivity problem.
        log.warning(
            "⚠️  %s event for %s refused: HTTP %d %s",
            kind,
            execution_id,
            response.status_code,
            response.text[:200],
        )
        return False

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class BackendProbe:
    """`GET /healthz` against the server, recorded in a `BackendStatus`; runs on the event loop."""

    def __init__(self, backend_url: str, status: BackendStatus) -> None:
        self.url = f"{backend_url}/healthz"
        self.status = status
        self._client: httpx.AsyncClient | None = None

    async def run_once(self) -> None:
        if self._client is None:  # made on first use, as in ProgressReporter
            self._client = httpx.AsyncClient(timeout=PROBE_TIMEOUT_SECONDS)
        try:
            response = await self._client.get(self.url)
        except httpx.HTTPError as error:
            self.status.mark_unreachable(f"GET {self.url}: {error or type(error).__name__}")
            return
        if response.status_code == 200:
            self.status.mark_reachable()
        else:
            self.status.mark_unreachable(f"GET {self.url}: HTTP {response.status_code}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
