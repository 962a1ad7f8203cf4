"""`python -m agent_runner` as a process tree: start, reload, broken reloads, re-exec, stop, leaks.

Every test runs the real supervisor (preloading the real dependencies) against a
real Temporal dev server; tests that edit the source work on a private copy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import (
    SupervisorProcess,
    TemporalDevServer,
    copy_source,
    free_port,
    process_state,
    run_workflow,
    runner_env,
    wait_until,
)

Start = Callable[..., SupervisorProcess]
HEALTH_KEYS = {"status", "uptime_seconds", "uid", "pid", "generation", "task_queue", "backend", "temporal", "reload"}


def connected(health: dict) -> bool:
    # `reload` too: the supervisor records the start a moment after the runner serves.
    return health["temporal"]["connected"] and health["reload"] is not None


def healthcheck(env: dict[str, str]) -> int:
    """The image's HEALTHCHECK command, with the runner's environment."""
    return subprocess.run([sys.executable, "-m", "agent_runner.healthcheck"], env=env, capture_output=True, timeout=10).returncode


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_start_serves_health_runs_workflows_and_stops(
    start_supervisor: Start, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    supervisor = start_supervisor(TEMPORAL_SERVICE_ADDRESS=temporal_server.address)
    health = supervisor.wait_health(connected)
    assert set(health) == HEALTH_KEYS
    assert health["status"] == "ok"
    assert health["generation"] == 1
    assert health["pid"] in supervisor.runners()
    assert health["uid"] == os.getuid()
    assert health["task_queue"] == supervisor.env["STIGMER_TASK_QUEUE"]
    assert health["temporal"] == {
        "address": temporal_server.address,
        "namespace": "default",
        "connected": True,
        "last_error": None,
    }
    assert health["backend"]["endpoint"] == "127.0.0.1:9"
    assert health["reload"]["generation"] == 1
    assert health["reload"]["state"] == "ready"
    assert health["reload"]["error"] is None
    # Preloaded, forked from, and still single-threaded.
    assert len(os.listdir(f"/proc/{supervisor.pid}/task")) == 1
    assert healthcheck(supervisor.env) == 0

    queue = supervisor.env["STIGMER_TASK_QUEUE"]
    assert run_workflow(temporal_server.address, queue, {"execution_id": "exec-s1", "agent": "echo", "input": "hi"}) == "hi"
    assert (tmp_path / "ws" / "exec-s1" / "input.txt").read_text() == "hi"
    # The backend is down (port 9): health says so once the lazy probe ran.
    backend = supervisor.wait_health(lambda h: h["backend"]["last_error"] is not None)["backend"]
    assert backend["reachable"] is False

    runner = health["pid"]
    started = time.monotonic()
    assert supervisor.stop() == 0
    assert time.monotonic() - started < 2
    assert process_state(runner) is None
    assert healthcheck(supervisor.env) == 1
    log = supervisor.log()
    assert "received SIGTERM: stopping 1 runner(s)" in log
    assert "generation 1 (pid %d) exited with status 0" % runner in log


def test_bad_configuration_exits_2_with_one_error_line(tmp_path: Path) -> None:
    for name, value, message in [
        ("STIGMER_RUNNER_HEALTH_PORT", "0", "STIGMER_RUNNER_HEALTH_PORT=0 is out of range; allowed: 1..65535"),
        ("TEMPORAL_SERVICE_ADDRESS", "grpc://x", "TEMPORAL_SERVICE_ADDRESS='grpc://x' must be host:port"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "agent_runner"],
            env=runner_env(tmp_path, **{name: value}),
            capture_output=True,
            timeout=20,
        )
        assert result.returncode == 2
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert message in lines[0]


def test_reload_runs_the_changed_source(start_supervisor: Start, temporal_server: TemporalDevServer, tmp_path: Path) -> None:
    source = copy_source(tmp_path / "src")
    supervisor = start_supervisor(runner_env(tmp_path, source, TEMPORAL_SERVICE_ADDRESS=temporal_server.address))
    first = supervisor.wait_health(connected)
    queue = supervisor.env["STIGMER_TASK_QUEUE"]
    assert run_workflow(temporal_server.address, queue, {"execution_id": "exec-r1", "agent": "echo", "input": "abc"}) == "abc"

    edit(source / "agent_runner/agents/echo.py", "    return text\n", "    return text.upper()\n")
    supervisor.reload()
    second = supervisor.wait_generation(2)
    assert second["pid"] != first["pid"]
    assert second["reload"]["state"] == "ready"
    assert run_workflow(temporal_server.address, queue, {"execution_id": "exec-r2", "agent": "echo", "input": "abc"}) == "ABC"
    # The old runner drained and was reaped.
    wait_until(lambda: process_state(first["pid"]) is None, 5, what="the old runner to exit")
    assert supervisor.runners() == [second["pid"]]


def test_broken_changes_keep_the_old_runner_and_say_why(start_supervisor: Start, tmp_path: Path) -> None:
    source = copy_source(tmp_path / "src")
    supervisor = start_supervisor(runner_env(tmp_path, source))
    first = supervisor.wait_health()
    echo = source / "agent_runner/agents/echo.py"
    reviewer = source / "agent_runner/agents/pr_reviewer.py"
    original_echo, original_reviewer = echo.read_text(), reviewer.read_text()

    echo.write_text(original_echo + "\ndef broken(:\n")
    supervisor.reload()
    health = supervisor.wait_health(lambda h: (h["reload"] or {}).get("generation") == 2)
    assert health["reload"]["state"] == "failed"
    assert "SyntaxError" in health["reload"]["error"]
    assert "echo.py" in health["reload"]["error"]
    assert (health["generation"], health["pid"]) == (1, first["pid"])

    echo.write_text(original_echo)
    reviewer.write_text(original_reviewer + "\nimport no_such_module_xyz\n")
    supervisor.reload()
    health = supervisor.wait_health(lambda h: (h["reload"] or {}).get("generation") == 3)
    assert health["reload"]["state"] == "failed"
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in health["reload"]["error"]
    assert (health["generation"], health["pid"]) == (1, first["pid"])
    assert supervisor.runners() == [first["pid"]]

    reviewer.write_text(original_reviewer)
    supervisor.reload()
    health = supervisor.wait_generation(4)
    assert health["reload"] == {**health["reload"], "generation": 4, "state": "ready", "error": None}
    assert supervisor.stop() == 0


def test_a_runner_that_hangs_at_start_is_killed_at_the_deadline(start_supervisor: Start, tmp_path: Path) -> None:
    source = copy_source(tmp_path / "src")
    supervisor = start_supervisor(runner_env(tmp_path, source))
    first = supervisor.wait_health()
    echo = source / "agent_runner/agents/echo.py"
    echo.write_text(echo.read_text() + "\nimport time\ntime.sleep(120)\n")
    reloaded = time.monotonic()
    supervisor.reload()
    health = supervisor.wait_health(lambda h: (h["reload"] or {}).get("generation") == 2, timeout=20)
    assert 9.5 < time.monotonic() - reloaded < 15
    assert health["reload"]["state"] == "failed"
    assert health["reload"]["error"] == "not ready within 10 s"
    assert (health["generation"], health["pid"]) == (1, first["pid"])
    wait_until(lambda: supervisor.runners() == [first["pid"]], 5, what="the hung runner to be reaped")
    assert supervisor.stop() == 0


def test_a_change_to_the_supervisor_reexecutes_it(start_supervisor: Start, tmp_path: Path) -> None:
    source = copy_source(tmp_path / "src")
    supervisor = start_supervisor(runner_env(tmp_path, source))
    supervisor.wait_health()
    module = source / "agent_runner/supervisor.py"
    original = module.read_text()

    module.write_text(original + "\ndef broken(:\n")
    supervisor.reload()
    health = supervisor.wait_health(lambda h: (h["reload"] or {}).get("generation") == 2)
    assert health["reload"]["state"] == "failed"
    assert "new supervisor does not start" in health["reload"]["error"]
    assert "SyntaxError" in health["reload"]["error"]
    assert health["generation"] == 1

    marker = "supervisor stopped (exit %d)"
    module.write_text(original.replace(marker, "supervisor (re-executed) stopped (exit %d)"))
    supervisor.reload()
    health = supervisor.wait_generation(3, timeout=20)
    assert health["reload"]["state"] == "ready"
    assert supervisor.process.poll() is None  # same process, new program
    assert supervisor.stop() == 0
    log = supervisor.log()
    assert log.count("preloaded") == 2
    assert "supervisor (re-executed) stopped (exit 0)" in log


def test_a_runner_that_dies_is_restarted(start_supervisor: Start) -> None:
    supervisor = start_supervisor()
    first = supervisor.wait_health()
    os.kill(first["pid"], signal.SIGKILL)
    second = supervisor.wait_generation(2)
    assert second["pid"] != first["pid"]
    assert f"generation 1 (pid {first['pid']}) exited on its own with signal SIGKILL" in supervisor.log()
    supervisor.process.send_signal(signal.SIGINT)  # Ctrl-C in a terminal: the same clean stop
    assert supervisor.process.wait(5) == 0
    assert "received SIGINT: stopping 1 runner(s)" in supervisor.log()


def test_fifty_reloads_leak_no_fds_and_no_zombies(start_supervisor: Start, temporal_server: TemporalDevServer) -> None:
    supervisor = start_supervisor(TEMPORAL_SERVICE_ADDRESS=temporal_server.address)
    supervisor.wait_health(connected)
    fds_before = sorted(os.listdir(f"/proc/{supervisor.pid}/fd"))
    for generation in range(2, 52):
        supervisor.reload()
        supervisor.wait_generation(generation)
    # A SIGHUP that lands while a runner starts asks for one more reload after it
    # (the source may have changed meanwhile), so wait for the tree to settle.
    def settled() -> int | None:
        health = supervisor.health()
        if health is None or (health["reload"] or {}).get("generation") != health["generation"]:
            return None
        return health["pid"] if supervisor.runners() == [health["pid"]] else None

    current = wait_until(settled, 20, what="one runner left, the others reaped")
    assert process_state(current) in ("S", "R")
    assert sorted(os.listdir(f"/proc/{supervisor.pid}/fd")) == fds_before
    assert len(os.listdir(f"/proc/{supervisor.pid}/task")) == 1
    assert supervisor.stop() == 0


def test_runner_comes_up_before_temporal_and_connects_later(start_supervisor: Start, tmp_path: Path) -> None:
    port = free_port()
    supervisor = start_supervisor(TEMPORAL_SERVICE_ADDRESS=f"127.0.0.1:{port}")
    health = supervisor.wait_health(lambda h: h["temporal"]["last_error"] is not None)
    assert health["temporal"]["connected"] is False
    assert "connect 127.0.0.1:%d" % port in health["temporal"]["last_error"]
    assert health["reload"]["state"] == "ready"

    temporal = TemporalDevServer.start(tmp_path, grpc_port=port)
    try:
        supervisor.wait_health(connected, timeout=10)
        queue = supervisor.env["STIGMER_TASK_QUEUE"]
        result = run_workflow(temporal.address, queue, {"execution_id": "exec-late", "agent": "echo", "input": "late"})
        assert result == "late"
    finally:
        assert supervisor.stop() == 0
        temporal.stop()


def test_an_unknown_namespace_is_reported_not_fatal(start_supervisor: Start, temporal_server: TemporalDevServer) -> None:
    supervisor = start_supervisor(TEMPORAL_SERVICE_ADDRESS=temporal_server.address, TEMPORAL_NAMESPACE="no-such-namespace")
    health = supervisor.wait_health(lambda h: h["temporal"]["last_error"] is not None, timeout=20)
    assert health["temporal"]["connected"] is False
    assert "no-such-namespace" in health["temporal"]["last_error"]
    assert supervisor.process.poll() is None
    assert supervisor.stop() == 0
