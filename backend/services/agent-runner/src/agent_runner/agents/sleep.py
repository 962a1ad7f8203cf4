"""The `sleep` agent: waits the given number of seconds, reporting progress each second.

An execution that takes a while on purpose: durability is shown (and tested) by killing a
runner, the server or Temporal while one runs, then seeing it finish with its result.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent_runner.agents.context import AgentError

if TYPE_CHECKING:
    from agent_runner.agents.context import AgentContext

MAX_SECONDS = 300.0


def parse_seconds(text: str) -> float:
    """The input as seconds: a number from 0 to 300 (empty means 1)."""
    try:
        seconds = float(text.strip() or "1")
    except ValueError:
        raise AgentError(f"sleep takes a number of seconds, got {text!r}") from None
    if not 0 <= seconds <= MAX_SECONDS:
        raise AgentError(f"sleep takes 0 to {MAX_SECONDS:.0f} seconds, got {seconds:g}")
    return seconds


def run(text: str, ctx: AgentContext) -> str:
    seconds = parse_seconds(text)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))
        ctx.progress(f"{max(deadline - time.monotonic(), 0):.0f} s left")
    return f"slept {seconds:g} s"
