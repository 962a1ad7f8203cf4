"""The /healthz body and its lazy refresh: answers from records, probes only when stale."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from agent_runner import reload_status
from agent_runner.health import STALE_AFTER_SECONDS, HealthIdentity, LazyRefresh, RunnerHealth
from agent_runner.progress import BackendStatus
from agent_runner.temporal_worker import TemporalStatus


def identity(tmp_path: Path) -> HealthIdentity:
    return HealthIdentity(
        generation=3,
        backend_endpoint="localhost:7234",
        temporal_address="localhost:7233",
        temporal_namespace="default",
        task_queue="agent_execution_runner",
        reload_status_file=reload_status.status_path(7235, str(tmp_path)),
    )


def test_body_reports_every_part(tmp_path: Path) -> None:
    backend, temporal = BackendStatus(), TemporalStatus()
    backend.mark_unreachable("connection refused")
    temporal.mark_connected()
    outcome = reload_status.ReloadOutcome.now(4, "failed", "SyntaxError: invalid syntax")
    reload_status.write(identity(tmp_path).reload_status_file, outcome)
    body = RunnerHealth(identity(tmp_path), backend, temporal, []).body()
    assert body.pop("uptime_seconds") >= 0
    assert body == {
        "status": "ok",
        "uid": os.getuid(),
        "pid": os.getpid(),
        "generation": 3,
        "task_queue": "agent_execution_runner",
        "backend": {"endpoint": "localhost:7234", "reachable": False, "last_error": "connection refused"},
        "temporal": {"address": "localhost:7233", "namespace": "default", "connected": True, "last_error": None},
        "reload": {"generation": 4, "state": "failed", "error": "SyntaxError: invalid syntax", "at": outcome.at},
    }
    assert json.loads(identity(tmp_path).reload_status_file.read_text())["generation"] == 4


def test_reload_is_null_without_a_supervisor(tmp_path: Path) -> None:
    body = RunnerHealth(identity(tmp_path), BackendStatus(), TemporalStatus(), []).body()
    assert body["reload"] is None


def test_lazy_refresh_probes_only_stale_records() -> None:
    async def scenario() -> list[str]:
        calls: list[str] = []
        status = BackendStatus()

        async def probe() -> None:
            calls.append("probe")
            status.mark_reachable()

        refresh = LazyRefresh(asyncio.get_running_loop(), probe, status.age_seconds)
        refresh.request()  # never checked: probes
        await asyncio.sleep(0.05)
        refresh.request()  # fresh: no probe
        await asyncio.sleep(0.05)
        assert status.age_seconds() is not None and status.age_seconds() < STALE_AFTER_SECONDS
        return calls

    assert asyncio.run(scenario()) == ["probe"]
