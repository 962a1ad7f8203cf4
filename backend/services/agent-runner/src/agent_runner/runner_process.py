"""A runner process from `os.fork()` to `service.run`: shed the supervisor's state, import afresh, report.

Runs in the child the supervisor has just forked. The child resets the signal
handling it inherited (the supervisor's handlers write to the supervisor's wakeup
socket), drops every `agent_runner` module so the current source is imported
(the preloaded third-party modules stay: that is the point of forking), and runs
`service.run`. It never returns into the supervisor's code: it ends with
`os._exit`, so no atexit handler or `finally` of the parent runs twice.

The ready pipe carries JSON lines: `{"state": "ready"}` once the runner serves,
or `{"state": "failed", "error": "<last lines of the traceback>"}` when it cannot
start; the supervisor records either in the reload status file.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Iterable
from types import FrameType
from typing import Any, NoReturn

log = logging.getLogger("agent_runner.supervisor")

PACKAGE = "agent_runner"
RUNNER_MODULE = "agent_runner.service"
ERROR_TAIL_LINES = 12
# Exit code of a runner that failed before its own code could choose one.
INTERNAL_ERROR = 70


def become_runner(
    listen_fd: int,
    ready_fd: int,
    generation: int,
    supervisor_sockets: Iterable[socket.socket],
    blocked_signals: Iterable[signal.Signals],
) -> NoReturn:
    code = INTERNAL_ERROR
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, exit_during_start)
        signal.signal(signal.SIGINT, exit_during_start)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the supervisor's business
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for owned in supervisor_sockets:
            owned.close()
        # Blocked by the supervisor around fork(); a SIGTERM sent meanwhile arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked_signals)
        service = fresh_import(RUNNER_MODULE)
        code = service.run(listen_fd, generation, lambda: send(ready_fd, {"state": "ready"}))
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else 0 if exit_request.code is None else 1
    except BaseException:  # noqa: BLE001 - whatever broke, the supervisor hears why
        error = error_tail()
        log.error("generation %d failed:\n%s", generation, error)
        send(ready_fd, {"state": "failed", "error": error})
        code = 1
    finally:
        flush_logs()
        os._exit(code)


def fresh_import(module: str) -> Any:
    """Import `module` from the current source: the package's modules are dropped first."""
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module(module)


def error_tail() -> str:
    lines = traceback.format_exc().rstrip().splitlines()
    return "\n".join(lines[-ERROR_TAIL_LINES:])


def send(fd: int, message: dict[str, Any]) -> None:
    try:
        os.write(fd, json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # the supervisor is gone; the runner notices on its own (service._stop_when_orphaned)


def parse_messages(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """Complete JSON lines in `buffer` (unparsable ones skipped) and the incomplete rest."""
    *lines, rest = buffer.split(b"\n")
    messages = []
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    return messages, rest


def flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


def exit_during_start(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM/SIGINT before a loop takes over (supervisor preload, runner start-up): exit 0 now.

    `os._exit`, not `SystemExit`: the signal lands anywhere in third-party import
    code, and some of it catches BaseException (we saw the exit swallowed, and
    turned into exit code 1). Nothing needs cleaning up yet: no runner is forked, no
    status written, and the kernel closes the sockets.
    """
    os.write(2, f"received {signal.Signals(signum).name} while starting, exiting\n".encode())
    os._exit(0)
