"""What an agent receives and how it fails: `AgentContext`, `OllamaSettings`, `AgentError`.

An agent is a callable `(input, ctx) -> result text`, run in a worker thread of the
`RunAgent` activity. It raises `AgentError` (or any exception) to fail the execution;
the activity turns that into the workflow's failure reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol


class AgentError(Exception):
    """An agent refused its input; the message is the execution's failure reason."""


@dataclass(frozen=True)
class OllamaSettings:
    base_url: str | None
    model: str


class AgentContext(Protocol):
    @property
    def execution_id(self) -> str: ...

    @property
    def execution_dir(self) -> Path:
        """`WORKSPACE_ROOT/<execution-id>/`; the agent creates it when it writes files."""

    @property
    def workspace_root(self) -> Path: ...

    @property
    def ollama(self) -> OllamaSettings: ...

    def progress(self, message: str) -> None:
        """Report progress to stigmer-server, best effort (never raises)."""


Agent = Callable[[str, AgentContext], str]
