"""The `RunAgent` activity: run one agent for one execution, heartbeating while it runs.

The activity is async, so the worker's event loop owns it; the agent itself is
blocking code (files, HTTP to Ollama, LangGraph's sync `invoke`) and runs in a
thread pool of its own, never on the loop. While it runs, a background task
heartbeats every second: with the workflow's 5 s heartbeat timeout a runner that
dies mid-activity is noticed within seconds and the retry runs on the next runner.

Failures the user should read are raised as `ApplicationError`s whose message is
the reason; bad input (unknown agent, unsafe execution ID) and agent exceptions are
non-retryable, since a retry would fail the same way. An activity cancelled because
its runner is shutting down (after the graceful shutdown period) fails retryably
instead, so the execution continues on the runner that replaces this one.
https://docs.temporal.io/develop/python/failure-detection#activity-heartbeats
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from agent_runner.agents import AGENTS
from agent_runner.agents.context import Agent, OllamaSettings
from agent_runner.progress import ProgressReporter
from agent_runner.workflow import (
    ACTIVITY_NAME,
    AGENT_FAILED,
    INVALID_INPUT,
    UNKNOWN_AGENT,
    WORKER_SHUTDOWN,
    ExecuteAgentInput,
)

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_SECONDS = 1.0
# A retry after a shutdown goes to whichever runner polls next; no reason to wait.
SHUTDOWN_RETRY_DELAY = timedelta(milliseconds=200)
# Execution IDs become directory names under the workspace; refuse anything else.
SAFE_EXECUTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ExecutionContext:
    """The `AgentContext` given to an agent for one attempt of one execution."""

    execution_id: str
    execution_dir: Path
    workspace_root: Path
    ollama: OllamaSettings
    reporter: ProgressReporter

    def progress(self, message: str) -> None:
        self.reporter.post(self.execution_id, "progress", message)


class AgentActivities:
    """Holds what the activity needs from the runner; `run_agent` is registered with the worker."""

    def __init__(
        self,
        workspace_root: Path,
        ollama: OllamaSettings,
        reporter: ProgressReporter,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.workspace_root = workspace_root
        self.ollama = ollama
        self.reporter = reporter
        self.executor = executor

    @activity.defn(name=ACTIVITY_NAME)
    async def run_agent(self, request: ExecuteAgentInput) -> str:
        attempt = activity.info().attempt
        heartbeat = asyncio.create_task(_heartbeat_until_cancelled())
        loop = asyncio.get_running_loop()
        # copy_context: the agent thread sees the activity context too (activity.info()).
        call = contextvars.copy_context().run
        try:
            return await loop.run_in_executor(self.executor, call, self._run_blocking, request, attempt)
        except asyncio.CancelledError:
            if activity.is_worker_shutdown():
                log.warning("execution %s: runner shutting down, handing the attempt back", request.execution_id)
                raise ApplicationError(
                    "runner shut down before the agent finished; retrying on another runner",
                    type=WORKER_SHUTDOWN,
                    next_retry_delay=SHUTDOWN_RETRY_DELAY,
                ) from None
            raise
        finally:
            heartbeat.cancel()

    def _run_blocking(self, request: ExecuteAgentInput, attempt: int) -> str:
        execution_id = request.execution_id
        log.info("▶ execution %s: agent %s (attempt %d)", execution_id, request.agent, attempt)
        self.reporter.post(execution_id, "status", f"running (attempt {attempt})")
        agent = self._check(request)
        context = ExecutionContext(
            execution_id=execution_id,
            execution_dir=self.workspace_root / execution_id,
            workspace_root=self.workspace_root,
            ollama=self.ollama,
            reporter=self.reporter,
        )
        try:
            result = agent(request.input, context)
        except Exception as error:  # noqa: BLE001 - any agent failure fails only this execution
            log.exception("execution %s: agent %s raised", execution_id, request.agent)
            raise ApplicationError(
                f"{type(error).__name__}: {error}", type=AGENT_FAILED, non_retryable=True
            ) from None
        log.info("■ execution %s succeeded (%d characters)", execution_id, len(result))
        return result

    def _check(self, request: ExecuteAgentInput) -> Agent:
        agent = AGENTS.get(request.agent)
        if agent is None:
            known = ", ".join(sorted(AGENTS))
            raise ApplicationError(
                f"unknown agent {request.agent!r}; known agents: {known}", type=UNKNOWN_AGENT, non_retryable=True
            )
        if not SAFE_EXECUTION_ID.match(request.execution_id):
            raise ApplicationError(
                f"execution id {request.execution_id!r} is not a safe directory name",
                type=INVALID_INPUT,
                non_retryable=True,
            )
        return agent


async def _heartbeat_until_cancelled() -> None:
    # The SDK throttles what it sends to the server (to 80% of the heartbeat timeout),
    # so beating every second costs nothing and never leaves a gap near the timeout.
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_INTERVAL_SECONDS)
