"""Agent registry: the agent names the backend may ask for, mapped to their callables."""

from __future__ import annotations

from agent_runner.agents import echo, pr_reviewer, sleep
from agent_runner.agents.context import Agent

AGENTS: dict[str, Agent] = {
    "echo": echo.run,
    "pr-reviewer": pr_reviewer.run,
    "sleep": sleep.run,
}
