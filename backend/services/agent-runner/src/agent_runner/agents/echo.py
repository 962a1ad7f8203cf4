"""The `echo` agent: returns its input unchanged and keeps a copy in `input.txt`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_runner.agents.context import AgentContext


def run(text: str, ctx: AgentContext) -> str:
    ctx.execution_dir.mkdir(parents=True, exist_ok=True)
    (ctx.execution_dir / "input.txt").write_text(text, encoding="utf-8")
    ctx.progress(f"echoed {len(text)} characters")
    return text
