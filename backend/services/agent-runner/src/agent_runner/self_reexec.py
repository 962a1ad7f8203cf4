"""The supervisor replacing its own program: when its source changed, check the new one, then exec.

The supervisor's own modules (everything of this package it has imported) are
hashed at start; a reload that finds one changed first runs the new version with
`--check` (it imports and reads the configuration, then exits), and only if that
succeeds calls `execv` with the same command line. The process (and so its PID,
its runners' parent) stays; the listening socket and the runners are described in
`STATE_ENV` for the new program to adopt.
https://man7.org/linux/man-pages/man2/execve.2.html
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

STATE_ENV = "STIGMER_SUPERVISOR_STATE"
CHECK_TIMEOUT_SECONDS = 30.0
ERROR_TAIL_LINES = 12


@dataclass
class InheritedState:
    """What a supervisor hands to its re-executed self: the socket and the running runners."""

    listen_fd: int
    generation: int
    current: tuple[int, int] | None
    stopping_runners: list[tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "listen_fd": self.listen_fd,
                "generation": self.generation,
                "current": self.current,
                "stopping_runners": self.stopping_runners,
            }
        )

    @classmethod
    def take_from(cls, environ: dict[str, str] | os._Environ[str]) -> InheritedState | None:
        """Read and remove the state, so no runner ever inherits it."""
        raw = environ.pop(STATE_ENV, None)
        if raw is None:
            return None
        data = json.loads(raw)
        current = data.get("current")
        return cls(
            listen_fd=int(data["listen_fd"]),
            generation=int(data["generation"]),
            current=(int(current[0]), int(current[1])) if current else None,
            stopping_runners=[(int(pid), int(gen)) for pid, gen in data.get("stopping_runners", [])],
        )


def own_source_digests(previous: dict[str, str] | None = None) -> dict[str, str]:
    """SHA-256 of each package file this process has loaded (or of the files in `previous`)."""
    paths = previous.keys() if previous is not None else _loaded_package_files()
    digests = {}
    for path in paths:
        try:
            digests[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            digests[path] = "missing"
    return digests


def changed_files(recorded: dict[str, str]) -> list[str]:
    current = own_source_digests(recorded)
    return sorted(path for path, digest in current.items() if recorded.get(path) != digest)


def check_new_version() -> str | None:
    """Run the current source's supervisor with `--check`; None when it starts, else why not."""
    try:
        check = subprocess.run(
            [sys.executable, *sys.orig_argv[1:], "--check"],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not check the new supervisor: {error}"
    if check.returncode == 0:
        return None
    problem = (check.stderr or check.stdout).strip() or f"exit code {check.returncode}"
    return "\n".join(problem.splitlines()[-ERROR_TAIL_LINES:])


def exec_self(state: InheritedState) -> OSError:
    """Replace this program by the current source's; returns only when exec failed."""
    os.set_inheritable(state.listen_fd, True)
    os.environ[STATE_ENV] = state.to_json()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as error:
        del os.environ[STATE_ENV]
        os.set_inheritable(state.listen_fd, False)
        return error


def _loaded_package_files() -> list[str]:
    package_dir = Path(__file__).resolve().parent
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().parent == package_dir:
            files.add(str(Path(path).resolve()))
    return sorted(files)
