"""The `sleep` agent: its input rules and that it really waits, reporting progress."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent_runner.agents.context import AgentError, OllamaSettings
from agent_runner.agents.sleep import parse_seconds, run


class Recorder:
    execution_id = "exec-sleep"
    execution_dir = Path("/nonexistent")
    workspace_root = Path("/nonexistent")
    ollama = OllamaSettings(base_url=None, model="m")

    def __init__(self) -> None:
        self.messages: list[str] = []

    def progress(self, message: str) -> None:
        self.messages.append(message)


def test_input_is_seconds_within_bounds() -> None:
    assert parse_seconds("") == 1.0
    assert parse_seconds(" 2.5 ") == 2.5
    for bad in ["soon", "-1", "301", "nan"]:
        with pytest.raises(AgentError):
            parse_seconds(bad)


def test_it_waits_and_reports_each_second() -> None:
    ctx = Recorder()
    started = time.monotonic()
    assert run("1.2", ctx) == "slept 1.2 s"
    assert 1.2 <= time.monotonic() - started < 2.0
    assert len(ctx.messages) == 2
