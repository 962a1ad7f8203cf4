"""A running agent across runner deaths and reloads: retried, drained, or handed over.

The slow agent is pr-reviewer waiting for a fake Ollama whose first answer is
held back; the runner is the real supervisor against a real Temporal dev server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client

from conftest import FakeBackend, FakeOllama, SupervisorProcess, TemporalDevServer, process_state, wait_until

Start = Callable[..., SupervisorProcess]
DIFF = "--- a/app/main.py\n+++ b/app/main.py\n@@ -1 +1,2 @@\n x = 1\n+print(x)\n"


def review_while(
    supervisor: SupervisorProcess,
    temporal: TemporalDevServer,
    ollama: FakeOllama,
    execution_id: str,
    meanwhile: Callable[[], None],
) -> str:
    """Start a pr-reviewer execution, run `meanwhile` once the model was asked, return the result."""

    async def go() -> str:
        client = await Client.connect(temporal.address)
        handle = await client.start_workflow(
            "ExecuteAgent",
            {"execution_id": execution_id, "agent": "pr-reviewer", "input": DIFF},
            id=execution_id,
            task_queue=supervisor.env["STIGMER_TASK_QUEUE"],
            result_type=str,
        )
        await asyncio.to_thread(wait_until, lambda: ollama.prompts, 10, 0.01, "the model to be asked")
        await asyncio.to_thread(meanwhile)
        return await asyncio.wait_for(handle.result(), 30)

    return asyncio.run(go())


def start_reviewer_runner(start: Start, temporal: TemporalDevServer, backend: FakeBackend, ollama: FakeOllama) -> SupervisorProcess:
    supervisor = start(
        TEMPORAL_SERVICE_ADDRESS=temporal.address,
        STIGMER_BACKEND_ENDPOINT=backend.endpoint,
        OLLAMA_BASE_URL=ollama.url,
    )
    supervisor.wait_health(lambda h: h["temporal"]["connected"])
    return supervisor


def statuses(backend: FakeBackend, execution_id: str) -> list[str]:
    return [e["message"] for e in backend.events_for(execution_id) if e["kind"] == "status"]


def test_a_runner_killed_mid_activity_is_retried_within_seconds(
    start_supervisor: Start, temporal_server: TemporalDevServer, backend: FakeBackend, ollama: FakeOllama
) -> None:
    ollama.delays = [60.0]  # the first attempt never gets its answer
    supervisor = start_reviewer_runner(start_supervisor, temporal_server, backend, ollama)
    runner = supervisor.wait_health()["pid"]
    killed_at: list[float] = []

    def kill_runner() -> None:
        os.kill(runner, signal.SIGKILL)
        killed_at.append(time.monotonic())

    report = review_while(supervisor, temporal_server, ollama, "exec-killed", kill_runner)
    elapsed = time.monotonic() - killed_at[0]
    assert "## Model review (llama3.2)" in report
    assert statuses(backend, "exec-killed") == ["running (attempt 1)", "running (attempt 2)"]
    # 5 s heartbeat timeout + 1 s retry interval, plus the runner's restart.
    assert elapsed < 10, elapsed
    assert supervisor.stop() == 0


def test_a_reload_lets_a_short_agent_finish_on_the_old_runner(
    start_supervisor: Start, temporal_server: TemporalDevServer, backend: FakeBackend, ollama: FakeOllama
) -> None:
    ollama.delays = [2.0]
    supervisor = start_reviewer_runner(start_supervisor, temporal_server, backend, ollama)
    old_runner = supervisor.wait_health()["pid"]
    report = review_while(supervisor, temporal_server, ollama, "exec-drained", supervisor.reload)
    assert "## Model review (llama3.2)" in report
    assert statuses(backend, "exec-drained") == ["running (attempt 1)"]
    assert supervisor.wait_generation(2)["pid"] != old_runner
    wait_until(lambda: process_state(old_runner) is None, 5, what="the drained runner to exit")
    assert supervisor.stop() == 0


def test_an_agent_longer_than_the_grace_period_moves_to_the_new_runner(
    start_supervisor: Start, temporal_server: TemporalDevServer, backend: FakeBackend, ollama: FakeOllama, tmp_path: Path
) -> None:
    ollama.delays = [60.0]
    supervisor = start_reviewer_runner(start_supervisor, temporal_server, backend, ollama)
    old_runner = supervisor.wait_health()["pid"]
    reloaded_at: list[float] = []

    def reload() -> None:
        supervisor.reload()
        reloaded_at.append(time.monotonic())

    report = review_while(supervisor, temporal_server, ollama, "exec-handover", reload)
    elapsed = time.monotonic() - reloaded_at[0]
    assert "## Model review (llama3.2)" in report
    assert statuses(backend, "exec-handover") == ["running (attempt 1)", "running (attempt 2)"]
    # The 10 s graceful shutdown, then the retry at once on the new runner.
    assert 9 < elapsed < 14, elapsed
    assert process_state(old_runner) is None
    assert "runner shutting down, handing the attempt back" in supervisor.log()
    assert supervisor.stop() == 0
