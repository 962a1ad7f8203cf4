"""One runner process: the control API on the inherited socket, the Temporal worker, a clean stop.

The supervisor forks a child and calls `run` in it, after importing this module
afresh from the current source. `run` reads the configuration, connects to
Temporal (going on while it is away, retrying in the background), calls
`on_ready` and starts serving `/healthz` and uploads on the inherited socket; only
then does the supervisor retire the previous runner.

Stopping is an asyncio affair: SIGTERM/SIGINT are handled with
`loop.add_signal_handler`, which wakes the loop through its wakeup fd whichever
thread the kernel delivers the signal to. (The lease-queue runner parked its main
thread in `Event.wait()`; a signal delivered to another thread then ran no handler
until the wait ended, and about one `docker stop` in 30 hit the 30 s grace.)
https://docs.python.org/3/library/asyncio-eventloop.html#unix-signals
The stop order is: stop accepting health requests (the new runner, sharing the
socket, takes them all), then Temporal's graceful worker shutdown (up to
`GRACEFUL_SHUTDOWN` for running agents), then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from agent_runner import reload_status
from agent_runner.activities import AgentActivities
from agent_runner.agents.context import OllamaSettings
from agent_runner.config import Config, ConfigError
from agent_runner.control_api import ControlServer, ControlSettings
from agent_runner.health import HealthIdentity, LazyRefresh, RunnerHealth
from agent_runner.progress import BackendProbe, BackendStatus, ProgressReporter
from agent_runner.temporal_worker import AGENT_THREADS, TemporalStatus, TemporalWorker

log = logging.getLogger("agent_runner")

# How long a new runner waits for its first Temporal connect before it says it is
# ready anyway: a runner must come up while Temporal is away (the container may
# start first), and a failed connect is quick, so this only bounds a hanging one.
FIRST_CONNECT_WAIT_SECONDS = 2.0
# serve_forever notices shutdown() only between polls of the listening socket.
ACCEPT_POLL_SECONDS = 0.05
# A stopping runner lets control requests in flight (an upload) finish for this long.
REQUEST_DRAIN_SECONDS = 5.0
PARENT_CHECK_SECONDS = 0.5


def run(listen_fd: int, generation: int, on_ready: Callable[[], None]) -> int:
    """The child's body; returns its exit code (0 after SIGTERM/SIGINT, 2 for bad configuration)."""
    try:
        config = Config.from_env(os.environ)
    except ConfigError as error:
        log.error("❌ invalid configuration: %s", error)
        return 2
    logging.getLogger().setLevel(config.logging_level)
    # httpx logs every request at INFO: one line per progress event and health probe.
    logging.getLogger("httpx").setLevel(max(config.logging_level, logging.WARNING))
    try:
        config.workspace_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("⚠️  workspace %s is not usable: %s", config.workspace_root, error)
    listening = socket.socket(fileno=listen_fd)
    return asyncio.run(_serve(config, listening, generation, on_ready))


async def _serve(config: Config, listening: socket.socket, generation: int, on_ready: Callable[[], None]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _request_stop, signum, stop)

    backend_status = BackendStatus()
    temporal_status = TemporalStatus()
    reporter = ProgressReporter(config.backend_url, backend_status)
    executor = ThreadPoolExecutor(max_workers=AGENT_THREADS, thread_name_prefix="agent")
    activities = AgentActivities(
        config.workspace_root,
        OllamaSettings(base_url=config.ollama_base_url, model=config.ollama_model),
        reporter,
        executor,
    )
    temporal = TemporalWorker(
        config.temporal_address, config.temporal_namespace, config.task_queue, activities, temporal_status
    )
    backend_probe = BackendProbe(config.backend_url, backend_status)
    health = RunnerHealth(
        HealthIdentity(
            generation=generation,
            backend_endpoint=config.backend_endpoint,
            temporal_address=config.temporal_address,
            temporal_namespace=config.temporal_namespace,
            task_queue=config.task_queue,
            reload_status_file=reload_status.status_path(config.health_port),
        ),
        backend_status,
        temporal_status,
        [
            LazyRefresh(loop, backend_probe.run_once, backend_status.age_seconds),
            LazyRefresh(loop, temporal.check, temporal_status.age_seconds),
        ],
    )
    server = ControlServer(
        listening,
        ControlSettings(workspace_root=config.workspace_root, max_upload_bytes=config.max_upload_bytes),
        health.body,
    )
    log.info(
        "🚀 Stigmer Agent Runner - %s Mode (generation %d, pid %d, uid %d)",
        config.mode.upper(),
        generation,
        os.getpid(),
        os.getuid(),
    )
    log.info(
        "Temporal: %s namespace %s, task queue %s; backend %s; workspace %s; health http://%s:%d/healthz",
        config.temporal_address,
        config.temporal_namespace,
        config.task_queue,
        config.backend_endpoint,
        config.workspace_root,
        config.bind_host,
        config.health_port,
    )

    worker_task = asyncio.create_task(temporal.run(), name="temporal-worker")
    serving: threading.Thread | None = None
    exit_code = 0
    try:
        await _first_connect_or_stop(temporal, worker_task, stop)
        if not stop.is_set():
            on_ready()
            # Served only from here: a runner that shows its generation on /healthz
            # is one the supervisor has accepted (one that fails before this point
            # never appears, and the previous runner goes on answering).
            serving = threading.Thread(
                target=server.serve_forever, args=(ACCEPT_POLL_SECONDS,), name="control-api", daemon=True
            )
            serving.start()
        watch = asyncio.create_task(_stop_when_orphaned(stop), name="parent-watch")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({stopped, worker_task}, return_when=asyncio.FIRST_COMPLETED)
        watch.cancel()
        stopped.cancel()
        if not stop.is_set():
            # The worker loop only ends on stop, or by raising (a worker that cannot be
            # built after a late connect): exit, and let the supervisor restart us.
            log.error("❌ the Temporal worker ended: %r", worker_task.exception())
            exit_code = 1
    finally:
        # Health first: from here on the new runner (which shares the socket) answers.
        await asyncio.to_thread(_close_server, server, serving is not None)
        await temporal.stop()
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker_task  # its failure, if any, was reported above
        await backend_probe.aclose()
        reporter.close()
        # Threads of agents cancelled by the graceful shutdown are abandoned, not
        # joined: their attempt is already handed to another runner.
        executor.shutdown(wait=False, cancel_futures=True)
    log.info("stopped (generation %d)", generation)
    return exit_code


async def _first_connect_or_stop(temporal: TemporalWorker, worker_task: asyncio.Task[None], stop: asyncio.Event) -> None:
    waits = {
        asyncio.create_task(temporal.first_attempt_done.wait()),
        asyncio.create_task(stop.wait()),
        worker_task,
    }
    done, _ = await asyncio.wait(waits, timeout=FIRST_CONNECT_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    for task in waits - {worker_task}:
        task.cancel()
    if worker_task in done:
        worker_task.result()  # a worker that could not even be built: the reload fails with its error
        raise RuntimeError("the Temporal worker ended before it started")


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    # A runner whose supervisor died (kill -9, a crashed re-exec) would hold the
    # health port forever; in a container the init process ends it, on a host nothing would.
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("supervisor %d is gone, stopping", parent)
    stop.set()


def _request_stop(signum: int, stop: asyncio.Event) -> None:
    if not stop.is_set():
        log.info("received %s, stopping", signal.Signals(signum).name)
    stop.set()


def _close_server(server: ControlServer, serving: bool) -> None:
    if serving:  # shutdown() waits for serve_forever to return: it must have started
        server.shutdown()
    server.server_close()
    if not server.wait_for_requests(REQUEST_DRAIN_SECONDS):
        log.warning("⚠️  control requests still running after %g s; abandoning them", REQUEST_DRAIN_SECONDS)
