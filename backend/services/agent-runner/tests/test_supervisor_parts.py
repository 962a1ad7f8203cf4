"""The supervisor's pure parts: hand-over state, the ready-pipe protocol, source digests, preload's thread check."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from agent_runner import reload_status
from agent_runner.runner_process import parse_messages
from agent_runner.self_reexec import STATE_ENV, InheritedState, changed_files, own_source_digests
from agent_runner.supervisor import PreloadError, describe_exit, preload


def test_inherited_state_round_trips_and_leaves_the_environment() -> None:
    state = InheritedState(listen_fd=5, generation=7, current=(1234, 7), stopping_runners=[(1200, 6)])
    environ = {STATE_ENV: state.to_json(), "PATH": "/bin"}
    assert InheritedState.take_from(environ) == state
    assert environ == {"PATH": "/bin"}
    assert InheritedState.take_from(environ) is None


def test_ready_pipe_messages_are_json_lines() -> None:
    messages, rest = parse_messages(b'{"state": "failed", "error": "x"}\nnot json\n[1]\n{"state": "re')
    assert messages == [{"state": "failed", "error": "x"}]
    assert rest == b'{"state": "re'
    messages, rest = parse_messages(rest + b'ady"}\n')
    assert (messages, rest) == ([{"state": "ready"}], b"")


def test_changed_files_names_edited_and_missing_files(tmp_path: Path) -> None:
    kept, edited, removed = tmp_path / "kept.py", tmp_path / "edited.py", tmp_path / "removed.py"
    for path in (kept, edited, removed):
        path.write_text(f"# {path.name}\n")
    recorded = own_source_digests({str(p): "" for p in (kept, edited, removed)})
    assert changed_files(recorded) == []
    edited.write_text("# edited\n")
    removed.unlink()
    kept.touch()  # a touch without a change is no change
    assert changed_files(recorded) == sorted([str(edited), str(removed)])


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "status 0"
    assert describe_exit(2) == "status 2"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def test_preload_refuses_a_module_that_starts_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading\nrelease = threading.Event()\nthreading.Thread(target=release.wait, daemon=True).start()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PreloadError, match="importing starts_a_thread started a thread"):
        preload(("json", "starts_a_thread"))
    import starts_a_thread

    starts_a_thread.release.set()
    assert threading.active_count() >= 1


def test_status_file_is_replaced_whole(tmp_path: Path) -> None:
    path = reload_status.status_path(7235, str(tmp_path))
    assert path == tmp_path / "stigmer-agent-runner-7235.reload.json"
    assert reload_status.read(path) is None
    reload_status.write(path, reload_status.ReloadOutcome.now(1, "ready"))
    reload_status.write(path, reload_status.ReloadOutcome.now(2, "failed", "boom"))
    assert {k: v for k, v in (reload_status.read(path) or {}).items() if k != "at"} == {
        "generation": 2,
        "state": "failed",
        "error": "boom",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
