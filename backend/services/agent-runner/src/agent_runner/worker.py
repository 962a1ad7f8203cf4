"""The backend worker thread: wait for the backend, long-poll tasks, run agents, report.

State shared with the health endpoint lives in `BackendStatus`. Shutdown sets an
event and aborts the client's open connections, so a long poll ends at once.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent_runner.agents import AGENTS
from agent_runner.agents.context import OllamaSettings
from agent_runner.backend_client import (
    BackendClient,
    BackendError,
    BackendUnreachable,
    LeaseLost,
    Task,
)

log = logging.getLogger(__name__)

POLL_WAIT_SECONDS = 20
BACKOFF_INITIAL_SECONDS = 0.5
# The backend is on loopback, so a probe costs next to nothing; a long ceiling would only
# delay the first execution after the server (re)starts.
BACKOFF_MAX_SECONDS = 2.0
# Execution ids become directory names under the workspace; refuse anything else.
SAFE_EXECUTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BackendStatus:
    """Thread-safe reachability record, read by `/healthz`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reachable = False
        self._last_error: str | None = None

    def mark_reachable(self) -> None:
        with self._lock:
            self._reachable = True
            self._last_error = None

    def mark_unreachable(self, error: str) -> None:
        with self._lock:
            self._reachable = False
            self._last_error = error

    def snapshot(self) -> tuple[bool, str | None]:
        with self._lock:
            return self._reachable, self._last_error


class Backoff:
    """Exponential backoff with full jitter in the upper half (avoids lockstep retries)."""

    def __init__(self, initial: float = BACKOFF_INITIAL_SECONDS, ceiling: float = BACKOFF_MAX_SECONDS) -> None:
        self.initial = initial
        self.ceiling = ceiling
        self._current = initial

    def next_delay(self) -> float:
        delay = self._current
        self._current = min(self._current * 2, self.ceiling)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._current = self.initial


@dataclass(frozen=True)
class ExecutionContext:
    """The `AgentContext` given to an agent for one leased task."""

    execution_id: str
    execution_dir: Path
    workspace_root: Path
    ollama: OllamaSettings
    lease_id: str
    client: BackendClient

    def progress(self, message: str) -> None:
        try:
            self.client.post_event(self.execution_id, self.lease_id, "progress", message)
        except (BackendError, BackendUnreachable) as error:
            # Progress is best effort: the completion call decides the outcome.
            log.warning("progress for %s not delivered: %s", self.execution_id, error)


class BackendWorker(threading.Thread):
    def __init__(
        self,
        client: BackendClient,
        status: BackendStatus,
        task_queue: str,
        workspace_root: Path,
        ollama: OllamaSettings,
        poll_wait_seconds: int = POLL_WAIT_SECONDS,
    ) -> None:
        super().__init__(name="backend-worker", daemon=True)
        self.client = client
        self.status = status
        self.task_queue = task_queue
        self.workspace_root = workspace_root
        self.ollama = ollama
        self.poll_wait_seconds = poll_wait_seconds
        self.runner_id = f"{socket.gethostname()}-{threading.get_native_id()}-{int(time.time())}"
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        self._stop_requested.set()
        self.client.abort()

    def run(self) -> None:
        backoff = Backoff()
        while not self._stop_requested.is_set():
            reachable, _ = self.status.snapshot()
            if not reachable and not self._probe_backend(backoff):
                continue
            try:
                task = self.client.poll(self.task_queue, self.runner_id, self.poll_wait_seconds)
            except BackendUnreachable as error:
                if not self._stop_requested.is_set():
                    log.warning("⚠️  lost the backend: %s", error)
                    self.status.mark_unreachable(str(error))
                continue
            except BackendError as error:
                log.error("poll refused: %s", error)
                self.status.mark_unreachable(str(error))
                continue
            if task is not None:
                self._execute(task)

    def _probe_backend(self, backoff: Backoff) -> bool:
        try:
            self.client.healthz()
        except (BackendUnreachable, BackendError) as error:
            self.status.mark_unreachable(str(error))
            delay = backoff.next_delay()
            log.debug("backend not reachable (%s); retrying in %.1f s", error, delay)
            self._stop_requested.wait(delay)
            return False
        backoff.reset()
        self.status.mark_reachable()
        log.info("✅ Connected to backend %s:%s", self.client.host, self.client.port)
        return True

    def _execute(self, task: Task) -> None:
        log.info("▶ execution %s: agent %s (attempt %d)", task.execution_id, task.agent, task.attempt)
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(task, heartbeat_stop), name="heartbeat", daemon=True
        )
        heartbeat.start()
        try:
            result, error = self._run_agent(task)
        finally:
            heartbeat_stop.set()
        try:
            self.client.complete(task.execution_id, task.lease_id, result, error)
        except LeaseLost as lost:
            log.warning("execution %s: lease lost before completion: %s", task.execution_id, lost)
        except (BackendError, BackendUnreachable) as failure:
            # The lease will expire and the backend requeues the task.
            log.error("execution %s: completion not delivered: %s", task.execution_id, failure)
        else:
            outcome = "failed: " + error if error is not None else "succeeded"
            log.info("■ execution %s %s", task.execution_id, outcome)

    def _run_agent(self, task: Task) -> tuple[str | None, str | None]:
        agent = AGENTS.get(task.agent)
        if agent is None:
            return None, f"unknown agent {task.agent!r}; known agents: {', '.join(sorted(AGENTS))}"
        if not SAFE_EXECUTION_ID.match(task.execution_id):
            return None, f"execution id {task.execution_id!r} is not a safe directory name"
        context = ExecutionContext(
            execution_id=task.execution_id,
            execution_dir=self.workspace_root / task.execution_id,
            workspace_root=self.workspace_root,
            ollama=self.ollama,
            lease_id=task.lease_id,
            client=self.client,
        )
        try:
            return agent(task.input, context), None
        except Exception as error:  # noqa: BLE001 - any agent failure fails only this execution
            log.exception("execution %s: agent %s raised", task.execution_id, task.agent)
            return None, f"{type(error).__name__}: {error}"

    def _heartbeat(self, task: Task, done: threading.Event) -> None:
        # A third of the lease leaves room for two missed beats before it expires.
        interval = max(task.lease_seconds / 3, 1.0)
        while not done.wait(interval):
            try:
                self.client.heartbeat(task.execution_id, task.lease_id)
            except LeaseLost as error:
                log.warning("execution %s: lease lost: %s", task.execution_id, error)
                return
            except (BackendError, BackendUnreachable) as error:
                log.warning("execution %s: heartbeat failed: %s", task.execution_id, error)
