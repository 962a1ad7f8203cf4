"""Progress events and the backend probe against a fake stigmer-server: best effort, never raising."""

from __future__ import annotations

import asyncio

from agent_runner.progress import BackendProbe, BackendStatus, ProgressReporter
from conftest import FakeBackend


def test_events_are_posted_as_the_contract_says(backend: FakeBackend) -> None:
    status = BackendStatus()
    reporter = ProgressReporter(f"http://{backend.endpoint}", status)
    assert reporter.post("exec-1", "status", "running (attempt 1)")
    assert reporter.post("exec-1", "progress", "half way")
    reporter.close()
    assert backend.events_for("exec-1") == [
        {"kind": "status", "message": "running (attempt 1)"},
        {"kind": "progress", "message": "half way"},
    ]
    assert status.snapshot() == (True, None)


def test_refused_events_return_false_and_keep_the_server_reachable(backend: FakeBackend) -> None:
    backend.event_status = 409
    status = BackendStatus()
    reporter = ProgressReporter(f"http://{backend.endpoint}", status)
    assert reporter.post("exec-done", "progress", "too late") is False
    assert status.snapshot() == (True, None)


def test_an_absent_server_is_recorded_not_raised() -> None:
    status = BackendStatus()
    reporter = ProgressReporter("http://127.0.0.1:9", status)
    assert reporter.post("exec-1", "progress", "anyone?") is False
    reachable, error = status.snapshot()
    assert reachable is False
    assert error is not None and error.startswith("POST /v1/executions/exec-1/events: ")


def test_probe_records_reachability(backend: FakeBackend) -> None:
    async def probe(url: str, status: BackendStatus) -> None:
        checker = BackendProbe(url, status)
        await checker.run_once()
        await checker.aclose()

    up, down = BackendStatus(), BackendStatus()
    asyncio.run(probe(f"http://{backend.endpoint}", up))
    asyncio.run(probe("http://127.0.0.1:9", down))
    assert up.snapshot() == (True, None)
    assert down.snapshot()[0] is False
    assert str(down.snapshot()[1]).startswith("GET http://127.0.0.1:9/healthz: ")
    assert up.age_seconds() is not None and up.age_seconds() < 5
