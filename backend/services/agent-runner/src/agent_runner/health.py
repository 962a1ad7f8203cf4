"""The `/healthz` body, and the lazy refresh of what it says about the server and Temporal.

The body is assembled from records other parts keep current (`BackendStatus`,
`TemporalStatus`, the supervisor's reload status file); answering never waits on
the network. When a record is older than `STALE_AFTER_SECONDS`, the request asks
the event loop to refresh it in the background, so the next answer is current and
a runner nobody asks does no probing at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

from agent_runner import reload_status
from agent_runner.progress import BackendStatus
from agent_runner.temporal_worker import TemporalStatus

log = logging.getLogger(__name__)

STALE_AFTER_SECONDS = 2.0


@dataclass(frozen=True)
class HealthIdentity:
    """What does not change while a runner process lives."""

    generation: int
    backend_endpoint: str
    temporal_address: str
    temporal_namespace: str
    task_queue: str
    reload_status_file: Path


class LazyRefresh:
    """Runs a probe coroutine on the loop when asked from any thread, at most one at a time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        probe: Callable[[], Coroutine[Any, Any, None]],
        age_seconds: Callable[[], float | None],
    ) -> None:
        self._loop = loop
        self._probe = probe
        self._age_seconds = age_seconds
        self._running: asyncio.Task[None] | None = None

    def request(self) -> None:
        age = self._age_seconds()
        if age is not None and age < STALE_AFTER_SECONDS:
            return
        try:
            self._loop.call_soon_threadsafe(self._start)
        except RuntimeError:
            pass  # the loop is closing: the runner is stopping, nothing to refresh

    def _start(self) -> None:
        if self._running is None or self._running.done():
            self._running = self._loop.create_task(self._probe())


class RunnerHealth:
    def __init__(
        self,
        identity: HealthIdentity,
        backend: BackendStatus,
        temporal: TemporalStatus,
        refreshes: list[LazyRefresh],
    ) -> None:
        self.identity = identity
        self.backend = backend
        self.temporal = temporal
        self.refreshes = refreshes
        self.started_at = time.monotonic()

    def body(self) -> dict[str, Any]:
        for refresh in self.refreshes:
            refresh.request()
        reachable, backend_error = self.backend.snapshot()
        connected, temporal_error = self.temporal.snapshot()
        identity = self.identity
        return {
            "status": "ok",
            "uptime_seconds": round(time.monotonic() - self.started_at, 3),
            "uid": os.getuid(),
            "pid": os.getpid(),
            "generation": identity.generation,
            "task_queue": identity.task_queue,
            "backend": {
                "endpoint": identity.backend_endpoint,
                "reachable": reachable,
                "last_error": backend_error,
            },
            "temporal": {
                "address": identity.temporal_address,
                "namespace": identity.temporal_namespace,
                "connected": connected,
                "last_error": temporal_error,
            },
            "reload": reload_status.read(identity.reload_status_file),
        }
