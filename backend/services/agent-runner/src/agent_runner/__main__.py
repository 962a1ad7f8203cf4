"""Process entry point (`python -m agent_runner`): config, banner, threads, signals.

Exit codes: 0 after SIGTERM/SIGINT, 2 for a bad configuration.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from agent_runner.agents.context import OllamaSettings
from agent_runner.backend_client import BackendClient
from agent_runner.config import Config, ConfigError
from agent_runner.control_api import ControlServer, ControlSettings
from agent_runner.worker import BackendStatus, BackendWorker

log = logging.getLogger("agent_runner")

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
SHUTDOWN_JOIN_SECONDS = 0.5


def main() -> int:
    try:
        config = Config.from_env(os.environ)
    except ConfigError as error:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        log.error("❌ invalid configuration: %s", error)
        return 2
    logging.basicConfig(level=config.logging_level, format=LOG_FORMAT)

    log.info("🚀 Stigmer Agent Runner - %s Mode", config.mode.upper())
    log.info("Task Queue: %s", config.task_queue)
    log.info("Backend: %s", config.backend_endpoint)
    log.info("Workspace: %s", config.workspace_root)
    log.info("Health: http://127.0.0.1:%d/healthz", config.health_port)
    log.info("User: uid=%d gid=%d", os.getuid(), os.getgid())

    try:
        config.workspace_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("⚠️  workspace %s is not usable: %s", config.workspace_root, error)

    status = BackendStatus()
    try:
        server = ControlServer(
            config.bind_host,
            config.health_port,
            ControlSettings(
                backend_endpoint=config.backend_endpoint,
                task_queue=config.task_queue,
                workspace_root=config.workspace_root,
                max_upload_bytes=config.max_upload_bytes,
            ),
            status,
        )
    except OSError as error:
        log.error("❌ cannot listen on %s:%d: %s", config.bind_host, config.health_port, error)
        return 1
    worker = BackendWorker(
        BackendClient(config.backend_host, config.backend_port),
        status,
        config.task_queue,
        config.workspace_root,
        OllamaSettings(base_url=config.ollama_base_url, model=config.ollama_model),
    )

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    # serve_forever notices shutdown() only between polls: a short interval keeps a
    # `docker stop` (and so every container replacement by the dev loop) quick.
    control = threading.Thread(target=server.serve_forever, args=(0.05,), name="control-api", daemon=True)
    control.start()
    worker.start()

    stop.wait()
    worker.stop()
    server.shutdown()
    server.server_close()
    # An agent still running is abandoned: its lease expires and the backend requeues it.
    worker.join(SHUTDOWN_JOIN_SECONDS)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
