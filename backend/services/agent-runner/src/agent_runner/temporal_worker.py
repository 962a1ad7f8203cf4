"""The Temporal side of the runner: connect (retrying while Temporal is away), run the worker.

The runner starts and answers `/healthz` whether or not Temporal is reachable: the
container may start before Temporal does. `TemporalWorker.run` connects with backoff,
then runs a `temporalio` worker for `ExecuteAgent` and `RunAgent` on the task queue;
a worker that fails (Temporal gone for good, namespace missing) is rebuilt after the
same backoff. `TemporalStatus` is what `/healthz` reports, refreshed lazily by
`check` when a health request finds it stale.

`stop` asks the worker for Temporal's graceful shutdown: polling stops at once, and
running activities get `GRACEFUL_SHUTDOWN` to finish before they are cancelled.
https://python.temporal.io/temporalio.worker.Worker.html#shutdown
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import temporalio
from temporalio.client import Client
from temporalio.worker import Worker

from agent_runner.activities import AgentActivities
from agent_runner.backoff import Backoff
from agent_runner.workflow import ExecuteAgent

log = logging.getLogger(__name__)

# Running agents get this long to finish when the runner stops (a reload's old
# runner, `docker stop`): short agents (echo, the deterministic reviewer) end in
# milliseconds, and a long Ollama review is retried on the next runner rather than
# held. Well under `docker stop`'s 30 s grace, leaving the supervisor time to wait
# for its child and exit on its own.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)
# Loopback or the Docker host: a connect that has not answered by then will not.
CONNECT_TIMEOUT_SECONDS = 5.0
CHECK_TIMEOUT = timedelta(seconds=1)
RECONNECT_BACKOFF = (0.25, 2.0)
# Agents run in threads of their own (see activities); the worker takes no more
# activities than there are threads, so none waits unseen in the executor's queue.
AGENT_THREADS = 4


class TemporalStatus:
    """Thread-safe connection record, read by `/healthz`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connected = False
        self._last_error: str | None = None
        self._checked_at: float | None = None

    def mark_connected(self) -> None:
        with self._lock:
            self._connected, self._last_error, self._checked_at = True, None, time.monotonic()

    def mark_disconnected(self, error: str) -> None:
        with self._lock:
            self._connected, self._last_error, self._checked_at = False, error, time.monotonic()

    def snapshot(self) -> tuple[bool, str | None]:
        with self._lock:
            return self._connected, self._last_error

    def age_seconds(self) -> float | None:
        with self._lock:
            return None if self._checked_at is None else time.monotonic() - self._checked_at


class TemporalWorker:
    def __init__(
        self,
        address: str,
        namespace: str,
        task_queue: str,
        activities: AgentActivities,
        status: TemporalStatus,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.task_queue = task_queue
        self.activities = activities
        self.status = status
        self.first_attempt_done = asyncio.Event()
        self._client: Client | None = None
        self._worker: Worker | None = None
        self._stopping = False

    async def run(self) -> None:
        """Connect and run the worker until `stop`; never raises for Temporal being away."""
        backoff = Backoff(*RECONNECT_BACKOFF)
        while not self._stopping:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that arrives as the connect completes, and the runner
                # would then run a worker nobody stops. https://github.com/python/cpython/issues/86296
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    client = await Client.connect(self.address, namespace=self.namespace)
            except (RuntimeError, OSError, TimeoutError) as error:
                reason = f"connect {self.address}: {_describe(error)}"
                self._record_failure(reason, backoff)
                await asyncio.sleep(backoff.next_delay())
                continue
            if self._stopping:
                return  # stop() came while connecting: no worker to start, none to drain
            backoff.reset()
            # Built before it is marked connected: a broken workflow or activity
            # definition raises here, and a reload reports it instead of going ready.
            worker = self._build_worker(client)
            self._client, self._worker = client, worker
            self.status.mark_connected()
            self.first_attempt_done.set()
            log.info("✅ Connected to Temporal %s (namespace %s, task queue %s)", self.address, self.namespace, self.task_queue)
            try:
                await worker.run()
            except Exception as error:  # noqa: BLE001 - a failed worker is rebuilt, never fatal
                self._record_failure(f"worker stopped: {_describe(error)}", backoff)
                self._worker = None
                if not self._stopping:
                    await asyncio.sleep(backoff.next_delay())

    async def stop(self) -> None:
        self._stopping = True
        if self._worker is not None:
            await self._worker.shutdown()

    async def check(self) -> None:
        """Refresh `status` with one cheap health RPC (used lazily by `/healthz`)."""
        client = self._client
        if client is None or self._worker is None:
            return  # the connect loop keeps the status current until a worker runs
        try:
            healthy = await client.service_client.check_health(timeout=CHECK_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - any RPC failure means "not connected"
            self.status.mark_disconnected(f"health check: {_describe(error)}")
            return
        if healthy:
            self.status.mark_connected()
        else:
            self.status.mark_disconnected("health check: frontend reports not serving")

    def _build_worker(self, client: Client) -> Worker:
        return Worker(
            client,
            task_queue=self.task_queue,
            workflows=[ExecuteAgent],
            activities=[self.activities.run_agent],
            max_concurrent_activities=AGENT_THREADS,
            # No workflow cache, hence no sticky task queue: after a runner is killed,
            # the workflow task that follows its retried activity would otherwise wait
            # out the sticky schedule-to-start timeout (10 s) on the dead runner's queue.
            # ExecuteAgent's history is a dozen events; replaying it costs nothing.
            # https://docs.temporal.io/sticky-execution
            max_cached_workflows=0,
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            # Without it the SDK hashes the bytecode of every loaded module to make
            # one, about a second per start: the whole reload budget.
            build_id=source_build_id(),
        )

    def _record_failure(self, reason: str, backoff: Backoff) -> None:
        connected_before, last_error = self.status.snapshot()
        self.status.mark_disconnected(reason)
        self.first_attempt_done.set()
        # Once per outage at WARNING, then DEBUG: a Temporal that is down for a minute
        # should not write a hundred lines.
        if connected_before or last_error is None:
            log.warning("⚠️  no Temporal worker running (%s); retrying", reason)
        else:
            log.debug("still no Temporal worker running: %s", reason)


def source_build_id() -> str:
    """The runner's own source and the SDK version, hashed: changes exactly when the code does."""
    digest = hashlib.sha256(temporalio.__version__.encode())
    package_dir = Path(__file__).resolve().parent
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return f"stigmer-agent-runner-{digest.hexdigest()[:16]}"


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
