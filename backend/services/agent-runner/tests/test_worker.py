"""The worker against a fake backend implementing just healthz/poll/events/complete."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent_runner.agents.context import OllamaSettings
from agent_runner.backend_client import BackendClient
from agent_runner.worker import Backoff, BackendStatus, BackendWorker


class FakeBackend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeBackendHandler)
        self.tasks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.completions: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()


class FakeBackendHandler(BaseHTTPRequestHandler):
    server: FakeBackend

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok", "version": "0.1.0"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        parts = self.path.strip("/").split("/")
        if parts[:2] == ["v1", "task-queues"] and parts[3] == "poll":
            try:
                task = self.server.tasks.get(timeout=min(body["wait_seconds"], 0.2))
            except queue.Empty:
                self._reply(204, None)
                return
            self._reply(200, task)
        elif parts[3] == "events":
            self.server.events.append((parts[2], body))
            self._reply(204, None)
        elif parts[3] == "heartbeat":
            self._reply(204, None)
        elif parts[3] == "complete":
            self.server.completions.put((parts[2], body))
            self._reply(204, None)

    def _reply(self, status: int, body: dict[str, Any] | None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
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


@pytest.fixture
def worker(backend: FakeBackend, tmp_path: Path) -> Iterator[BackendWorker]:
    status = BackendStatus()
    worker = BackendWorker(
        BackendClient("127.0.0.1", backend.server_address[1]),
        status,
        "agent_execution_runner",
        tmp_path,
        OllamaSettings(base_url=None, model="llama3.2"),
        poll_wait_seconds=1,
    )
    worker.start()
    yield worker
    worker.stop()
    worker.join(2)
    assert not worker.is_alive()


def task(execution_id: str, agent: str, text: str) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "agent": agent,
        "input": text,
        "lease_id": f"lease-{execution_id}",
        "lease_seconds": 30,
        "attempt": 1,
    }


def test_echo_succeeds(backend: FakeBackend, worker: BackendWorker, tmp_path: Path) -> None:
    backend.tasks.put(task("exec-echo1", "echo", "hello"))
    execution_id, body = backend.completions.get(timeout=5)
    assert execution_id == "exec-echo1"
    assert body == {"lease_id": "lease-exec-echo1", "status": "succeeded", "result": "hello", "error": None}
    assert (tmp_path / "exec-echo1" / "input.txt").read_text() == "hello"
    assert ("exec-echo1", {"lease_id": "lease-exec-echo1", "kind": "progress", "message": "echoed 5 characters"}) in backend.events
    assert worker.status.snapshot() == (True, None)


def test_unknown_agent_fails_and_worker_keeps_serving(backend: FakeBackend, worker: BackendWorker) -> None:
    backend.tasks.put(task("exec-nope", "no-such-agent", ""))
    backend.tasks.put(task("exec-after", "echo", "still here"))
    _, failed = backend.completions.get(timeout=5)
    assert failed["status"] == "failed"
    assert failed["result"] is None
    assert "unknown agent 'no-such-agent'" in failed["error"]
    _, succeeded = backend.completions.get(timeout=5)
    assert succeeded["status"] == "succeeded"


def test_agent_exception_fails_with_reason(backend: FakeBackend, worker: BackendWorker) -> None:
    # pr-reviewer with empty input and no diff file raises AgentError.
    backend.tasks.put(task("exec-nodiff", "pr-reviewer", ""))
    _, body = backend.completions.get(timeout=5)
    assert body["status"] == "failed"
    assert "no *.diff or *.patch file" in body["error"]


def test_unreachable_backend_is_reported_and_stop_is_prompt(tmp_path: Path) -> None:
    status = BackendStatus()
    worker = BackendWorker(
        BackendClient("127.0.0.1", 9),  # discard port: nothing listens
        status,
        "agent_execution_runner",
        tmp_path,
        OllamaSettings(base_url=None, model="llama3.2"),
    )
    worker.start()
    deadline = time.monotonic() + 3
    while status.snapshot()[1] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    reachable, last_error = status.snapshot()
    assert not reachable
    assert last_error is not None and "healthz" in last_error
    started = time.monotonic()
    worker.stop()
    worker.join(2)
    assert not worker.is_alive()
    assert time.monotonic() - started < 1


def test_backoff_doubles_to_ceiling_with_jitter() -> None:
    backoff = Backoff(0.5, 10.0)
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    for ceiling in ceilings:
        assert ceiling / 2 <= backoff.next_delay() <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5
