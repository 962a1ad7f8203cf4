"""Shared fixtures: a control server on an ephemeral port over a temp workspace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_runner.control_api import ControlServer, ControlSettings
from agent_runner.worker import BackendStatus

MAX_UPLOAD_BYTES = 64 * 1024


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[ControlServer]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    settings = ControlSettings(
        backend_endpoint="localhost:7234",
        task_queue="agent_execution_runner",
        workspace_root=workspace,
        max_upload_bytes=MAX_UPLOAD_BYTES,
    )
    server = ControlServer("127.0.0.1", 0, settings, BackendStatus())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
