"""ExecuteAgent and RunAgent against a real Temporal dev server, with the worker in-process.

Started as stigmer-server starts it (Temporal's HTTP API, payload shorthand) and
checked at the payload level: one json/plain result, failures whose message is the
human reason, non-retryable bad input, progress events at the fake server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agent_runner.activities import AgentActivities
from agent_runner.agents.context import OllamaSettings
from agent_runner.progress import BackendStatus, ProgressReporter
from agent_runner.temporal_worker import TemporalStatus, TemporalWorker
from conftest import FakeBackend, FakeOllama, TemporalDevServer, unique_task_queue

T = TypeVar("T")


def with_worker(
    temporal: TemporalDevServer,
    backend_endpoint: str,
    workspace: Path,
    body: Callable[[Client, str], Awaitable[T]],
    ollama_url: str | None = None,
) -> T:
    async def go() -> T:
        queue = unique_task_queue()
        reporter = ProgressReporter(f"http://{backend_endpoint}", BackendStatus())
        activities = AgentActivities(
            workspace, OllamaSettings(base_url=ollama_url, model="llama3.2"), reporter, ThreadPoolExecutor(2)
        )
        status = TemporalStatus()
        worker = TemporalWorker(temporal.address, "default", queue, activities, status)
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.first_attempt_done.wait(), 10)
        assert status.snapshot() == (True, None)
        try:
            client = await Client.connect(temporal.address)
            return await asyncio.wait_for(body(client, queue), 30)
        finally:
            await worker.stop()
            await running
            reporter.close()

    return asyncio.run(go())


async def start_over_http(temporal: TemporalDevServer, queue: str, execution_id: str, argument: Any) -> None:
    """What stigmer-server does: StartWorkflowExecution through the HTTP API with payload shorthand."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{temporal.http_port}/api/v1/namespaces/default/workflows/{execution_id}",
            json={
                "workflowType": {"name": "ExecuteAgent"},
                "taskQueue": {"name": queue},
                "input": [argument],
            },
        )
    assert response.status_code == 200, response.text


async def closing_event(client: Client, execution_id: str) -> Any:
    history = await client.get_workflow_handle(execution_id).fetch_history()
    return history.events[-1]


def test_echo_started_over_http_returns_one_json_string(
    temporal_server: TemporalDevServer, backend: FakeBackend, tmp_path: Path
) -> None:
    execution_id = f"exec-{uuid.uuid4().hex[:12]}"

    async def body(client: Client, queue: str) -> Any:
        argument = {"execution_id": execution_id, "agent": "echo", "input": "hello, runner"}
        await start_over_http(temporal_server, queue, execution_id, argument)
        result = await client.get_workflow_handle(execution_id).result()
        return result, await closing_event(client, execution_id)

    result, event = with_worker(temporal_server, backend.endpoint, tmp_path / "ws", body)
    assert result == "hello, runner"
    assert event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    [payload] = event.workflow_execution_completed_event_attributes.result.payloads
    assert payload.metadata["encoding"] == b"json/plain"
    assert json.loads(payload.data) == "hello, runner"
    assert backend.events_for(execution_id) == [
        {"kind": "status", "message": "running (attempt 1)"},
        {"kind": "progress", "message": "echoed 13 characters"},
    ]
    assert (tmp_path / "ws" / execution_id / "input.txt").read_text() == "hello, runner"


def failure_of(temporal: TemporalDevServer, backend: FakeBackend, workspace: Path, argument: Any) -> tuple[Any, Any]:
    execution_id = f"exec-{uuid.uuid4().hex[:12]}"

    async def body(client: Client, queue: str) -> tuple[Any, Any]:
        await start_over_http(temporal, queue, execution_id, argument)
        with pytest.raises(WorkflowFailureError) as caught:
            await client.get_workflow_handle(execution_id).result()
        return caught.value.cause, await closing_event(client, execution_id)

    return with_worker(temporal, backend.endpoint, workspace, body)


def test_unknown_agent_fails_once_with_the_reason(
    temporal_server: TemporalDevServer, backend: FakeBackend, tmp_path: Path
) -> None:
    cause, event = failure_of(temporal_server, backend, tmp_path, {"execution_id": "exec-x1", "agent": "nope", "input": ""})
    assert isinstance(cause, ApplicationError)
    assert cause.message == "unknown agent 'nope'; known agents: echo, pr-reviewer, sleep"
    assert cause.non_retryable
    failure = event.workflow_execution_failed_event_attributes.failure
    assert failure.message == "unknown agent 'nope'; known agents: echo, pr-reviewer, sleep"
    assert failure.application_failure_info.non_retryable
    # Non-retryable: exactly one attempt reached the runner.
    assert backend.events_for("exec-x1") == [{"kind": "status", "message": "running (attempt 1)"}]


def test_agent_exception_fails_with_type_and_message(
    temporal_server: TemporalDevServer, backend: FakeBackend, tmp_path: Path
) -> None:
    # pr-reviewer with empty input and no diff file raises AgentError.
    cause, _ = failure_of(temporal_server, backend, tmp_path, {"execution_id": "exec-x2", "agent": "pr-reviewer", "input": ""})
    assert isinstance(cause, ApplicationError)
    assert cause.message == (
        "AgentError: empty input and no *.diff or *.patch file in the execution directory or workspace root"
    )
    assert len(backend.events_for("exec-x2")) == 1


def test_malformed_input_fails_the_workflow_not_its_task(
    temporal_server: TemporalDevServer, backend: FakeBackend, tmp_path: Path
) -> None:
    cause, _ = failure_of(temporal_server, backend, tmp_path, {"execution_id": "exec-x3", "agent": 7})
    assert isinstance(cause, ApplicationError)
    assert cause.message == "invalid input: field 'agent' must be a string, got 7"
    cause, _ = failure_of(temporal_server, backend, tmp_path, "just a string")
    assert cause.message == "invalid input: expected a JSON object with execution_id, agent, input; got str"


def test_unsafe_execution_id_is_refused(temporal_server: TemporalDevServer, backend: FakeBackend, tmp_path: Path) -> None:
    cause, _ = failure_of(temporal_server, backend, tmp_path, {"execution_id": "../etc", "agent": "echo", "input": "x"})
    assert cause.message == "execution id '../etc' is not a safe directory name"
    assert not (tmp_path / "etc").exists()


def test_a_server_that_does_not_answer_never_fails_the_agent(temporal_server: TemporalDevServer, tmp_path: Path) -> None:
    async def body(client: Client, queue: str) -> str:
        return await client.execute_workflow(
            "ExecuteAgent",
            {"execution_id": "exec-offline", "agent": "echo", "input": "still works"},
            id=f"exec-offline-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=str,
        )

    assert with_worker(temporal_server, "127.0.0.1:9", tmp_path, body) == "still works"


def test_refused_events_are_not_failures(temporal_server: TemporalDevServer, backend: FakeBackend, tmp_path: Path) -> None:
    backend.event_status = 409  # the server considers the execution finished

    async def body(client: Client, queue: str) -> str:
        return await client.execute_workflow(
            "ExecuteAgent",
            {"execution_id": "exec-late", "agent": "echo", "input": "late"},
            id=f"exec-late-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=str,
        )

    assert with_worker(temporal_server, backend.endpoint, tmp_path, body) == "late"
    assert len(backend.events_for("exec-late")) == 2


def test_pr_reviewer_with_a_model_that_answers(
    temporal_server: TemporalDevServer, backend: FakeBackend, ollama: FakeOllama, tmp_path: Path
) -> None:
    diff = "--- a/app/main.py\n+++ b/app/main.py\n@@ -1 +1,2 @@\n x = 1\n+print(x)\n"

    async def body(client: Client, queue: str) -> str:
        return await client.execute_workflow(
            "ExecuteAgent",
            {"execution_id": "exec-review", "agent": "pr-reviewer", "input": diff},
            id=f"exec-review-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=str,
        )

    report = with_worker(temporal_server, backend.endpoint, tmp_path, body, ollama_url=ollama.url)
    assert report == (
        "# Review of input\n\n## Findings\n\n"
        "app/main.py:2: [debug-print] print( call added; debugging leftover?\n\n"
        "Summary: 1 finding(s) in 1 file(s), 1 added line(s) checked\n\n"
        "## Model review (llama3.2)\n\n1. app/main.py:4 prints in production code\n"
    )
    assert (tmp_path / "exec-review" / "review.md").read_text() == report
    assert ollama.prompts and diff in ollama.prompts[0]
    assert [e["message"] for e in backend.events_for("exec-review")] == [
        "running (attempt 1)",
        "reviewing diff from input",
        "Summary: 1 finding(s) in 1 file(s), 1 added line(s) checked",
        "asking Ollama model llama3.2",
    ]
