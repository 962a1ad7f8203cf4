"""`python -m agent_runner` as a process: ready, SIGTERM exits 0 promptly, bad config exits 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def runner_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(PYTHONPATH=SRC, WORKSPACE_ROOT=str(tmp_path / "ws"), STIGMER_BACKEND_ENDPOINT="127.0.0.1:9")
    env.update(extra)
    return env


def test_sigterm_stops_within_two_seconds(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_runner"],
        env=runner_env(tmp_path, STIGMER_RUNNER_HEALTH_PORT=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 5
        health = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    health = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.05)
        assert health is not None and health["status"] == "ok"
        assert (tmp_path / "ws").is_dir()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=2) == 0
        assert time.monotonic() - started < 2
    finally:
        process.kill()
        output = process.communicate()[0].decode()
    assert "🚀 Stigmer Agent Runner - LOCAL Mode" in output
    assert "received SIGTERM, stopping" in output


def test_bad_config_exits_2_with_one_error_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent_runner"],
        env=runner_env(tmp_path, STIGMER_RUNNER_HEALTH_PORT="0"),
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "STIGMER_RUNNER_HEALTH_PORT=0 is out of range; allowed: 1..65535" in lines[0]
