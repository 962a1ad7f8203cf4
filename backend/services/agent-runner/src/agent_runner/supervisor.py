"""The container's main process: preload dependencies once, fork runners, reload on SIGHUP.

`python -m agent_runner` runs this, behind docker-init, in dev mode (source
bind-mounted read-only at /app) and in image mode (source baked in) alike.

- Start: read the configuration (exit 2 when it is bad), import the heavy
  third-party modules (`PRELOAD_MODULES`, about 1.5 s; never the runner's modules,
  `service` and what it imports, and never anything that starts a thread: forking
  a process with threads is unsafe, and `/proc/self/task` is checked), create the
  health listening socket, fork the first runner.
- SIGHUP, reload: fork a new runner from this preloaded process; it imports the
  current source afresh (`runner_process`), connects, serves `/healthz` on the
  shared socket and reports ready on a pipe. Only then is the old runner sent
  SIGTERM (it stops accepting health requests, then drains). A new runner that
  crashes, or is not ready within `READY_DEADLINE_SECONDS`, is killed and the old
  one keeps running. When one of this process's own modules changed, it
  re-executes itself first (`self_reexec`), keeping the socket and runners.
- Every start's outcome goes to the reload status file (`reload_status`), which
  `/healthz` shows as `reload`.
- SIGTERM/SIGINT: forwarded to the runners, waited for (`STOP_DEADLINE_SECONDS`,
  then SIGKILL), exit 0.
- A runner that exits on its own is restarted: at once after a clean exit (someone
  stopped it), with backoff after a crash, indefinitely, so a broken edit in dev
  mode recovers with the next attempt. Only a first start that fails with exit
  code 2 (bad configuration) ends the supervisor, with code 2.

Single-threaded by design: signals are handled with Python handlers that only
wake a selector through `signal.set_wakeup_fd`, and everything else happens in
the loop, so there is no lock a fork could copy in the wrong state.
https://docs.python.org/3/library/signal.html#signal.set_wakeup_fd
"""

from __future__ import annotations

import importlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from agent_runner import reload_status, runner_process, self_reexec
from agent_runner.backoff import Backoff
from agent_runner.config import Config, ConfigError
from agent_runner.self_reexec import InheritedState

log = logging.getLogger("agent_runner.supervisor")

LOG_FORMAT = "%(asctime)s - %(levelname)s - [%(process)d] %(message)s"

# Imported once here and shared with every runner through fork; each costs a
# runner start tens to hundreds of milliseconds otherwise (langgraph.graph alone
# about 1.1 s on our machines).
PRELOAD_MODULES = (
    "asyncio",
    "concurrent.futures",
    "http.server",
    "httpx",
    "python_multipart",
    "temporalio.activity",
    "temporalio.client",
    "temporalio.common",
    "temporalio.exceptions",
    "temporalio.worker",
    "temporalio.workflow",
    "langgraph.graph",
    "langgraph.runtime",
)

READY_DEADLINE_SECONDS = 10.0
# The runner's graceful shutdown gives running agents 10 s (temporal_worker.GRACEFUL_SHUTDOWN);
# a runner still there 5 s after that is killed.
DRAIN_DEADLINE_SECONDS = 15.0
STOP_DEADLINE_SECONDS = 15.0
RESTART_BACKOFF = (0.5, 5.0)
LISTEN_BACKLOG = 128
HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD})


class PreloadError(Exception):
    """A preloaded module started a thread, which would make forking unsafe."""


@dataclass
class Runner:
    """One forked runner process, as the supervisor tracks it."""

    pid: int
    generation: int
    started_at: float
    ready_fd: int | None = None
    pending_output: bytes = b""
    error: str | None = None
    # While starting: when it is killed for not being ready. While stopping: when
    # SIGTERM turns into SIGKILL.
    deadline: float | None = None
    failed_start: bool = False

    def describe(self) -> str:
        return f"generation {self.generation} (pid {self.pid})"


class Supervisor:
    def __init__(self, config: Config, listening: socket.socket, inherited: InheritedState | None) -> None:
        self.config = config
        self.listening = listening
        self.status_file = reload_status.status_path(config.health_port)
        self.generation = 0
        self.current: Runner | None = None
        self.starting: Runner | None = None
        self.stopping_runners: dict[int, Runner] = {}
        self.stopping = False
        self.reload_requested = False
        self.ever_ready = False
        self.restart_at: float | None = None
        self.restart_backoff = Backoff(*RESTART_BACKOFF)
        self.own_sources = self_reexec.own_source_digests()
        self.selector = selectors.PollSelector()  # no kernel object a forked child could disturb
        self.wakeup_read, self.wakeup_write = socket.socketpair()
        self.exit_code = 0
        now = time.monotonic()
        if inherited is not None:
            self.generation = inherited.generation
            self.ever_ready = inherited.current is not None
            if inherited.current is not None:
                pid, generation = inherited.current
                self.current = Runner(pid, generation, now)
            for pid, generation in inherited.stopping_runners:
                self.stopping_runners[pid] = Runner(pid, generation, now, deadline=now + DRAIN_DEADLINE_SECONDS)
        else:
            _remove_stale(self.status_file)

    # --- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        self._reap()
        self._start_runner("reload" if self.current is not None else "start")
        while not (self.stopping and not self._runners()):
            for key, _ in self.selector.select(self._seconds_to_next_deadline()):
                if key.fileobj is self.wakeup_read:
                    self._on_signals(self._read_wakeup())
                else:
                    self._on_ready_pipe()
            self._reap()
            self._on_deadlines()
        log.info("supervisor stopped (exit %d)", self.exit_code)
        return self.exit_code

    def _install_signal_handlers(self) -> None:
        self.wakeup_read.setblocking(False)
        self.wakeup_write.setblocking(False)
        self.selector.register(self.wakeup_read, selectors.EVENT_READ)
        # The handlers do nothing: the C-level handler writes the signal number to
        # the wakeup socket, which wakes the selector, and the loop reads it there.
        signal.set_wakeup_fd(self.wakeup_write.fileno(), warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, _wake_only)
        # Signals held back across a re-exec (see _reexec) arrive now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def _read_wakeup(self) -> list[int]:
        received = b""
        while True:
            try:
                chunk = self.wakeup_read.recv(256)
            except BlockingIOError:
                break
            if not chunk:
                break
            received += chunk
        return list(received)

    def _on_signals(self, signums: list[int]) -> None:
        for signum in signums:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._stop(signal.Signals(signum).name)
            elif signum == signal.SIGHUP:
                self._reload()
            # SIGCHLD: the loop reaps after every wakeup.

    # --- starting runners ---------------------------------------------------------

    def _reload(self) -> None:
        if self.stopping:
            return
        if self.starting is not None:
            self.reload_requested = True  # one more reload once this start is decided
            return
        changed = self_reexec.changed_files(self.own_sources)
        if changed:
            self._reexec(changed)
            return
        self._start_runner("reload")

    def _start_runner(self, trigger: str) -> None:
        self.restart_at = None
        threads = thread_count()
        if threads != 1:
            # Never expected: preload checks this. Forking now could copy a held lock.
            log.error("supervisor has %d threads; not forking (restart the container)", threads)
            self._record(self.generation + 1, "failed", f"supervisor has {threads} threads, cannot fork safely")
            return
        self.generation += 1
        generation = self.generation
        read_fd, write_fd = os.pipe()
        # Blocked across fork so that a signal meant for the new runner never runs
        # this process's handlers (and wakeup socket) inside the child.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            os.close(read_fd)
            os.close(write_fd)
            self._record(generation, "failed", f"fork failed: {error}")
            self._schedule_restart(crashed=True)
            return
        if pid == 0:
            os.close(read_fd)
            runner_process.become_runner(
                self.listening.fileno(),
                write_fd,
                generation,
                (self.wakeup_read, self.wakeup_write),
                HANDLED_SIGNALS,
            )
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        now = time.monotonic()
        self.starting = Runner(pid, generation, now, ready_fd=read_fd, deadline=now + READY_DEADLINE_SECONDS)
        self.selector.register(read_fd, selectors.EVENT_READ)
        log.info("generation %d: %s, runner pid %d", generation, trigger, pid)

    def _on_ready_pipe(self) -> None:
        runner = self.starting
        if runner is None or runner.ready_fd is None:
            return
        ended = False
        while True:
            try:
                chunk = os.read(runner.ready_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                ended = True
                break
            runner.pending_output += chunk
        messages, runner.pending_output = runner_process.parse_messages(runner.pending_output)
        for message in messages:
            if message.get("state") == "ready":
                self._promote(runner)
                return
            if message.get("state") == "failed":
                runner.error = str(message.get("error") or "failed without a reason")
        if ended:
            # The runner closed its end without saying ready: it is exiting. The
            # failure is recorded when it is reaped, with its exit status (and should
            # it linger, the ready deadline still kills it).
            self._close_ready_pipe(runner)

    def _promote(self, runner: Runner) -> None:
        self._close_ready_pipe(runner)
        self.starting = None
        runner.deadline = None
        previous, self.current = self.current, runner
        self.ever_ready = True
        self.restart_backoff.reset()
        if previous is not None:
            self._stop_runner(previous, DRAIN_DEADLINE_SECONDS)
        self._record(runner.generation, "ready", None)
        log.info(
            "generation %d ready in %.3f s (pid %d)%s",
            runner.generation,
            time.monotonic() - runner.started_at,
            runner.pid,
            f"; stopping generation {previous.generation}" if previous is not None else "",
        )
        if self.reload_requested:
            self.reload_requested = False
            self._reload()

    def _close_ready_pipe(self, runner: Runner) -> None:
        if runner.ready_fd is not None:
            self.selector.unregister(runner.ready_fd)
            os.close(runner.ready_fd)
            runner.ready_fd = None

    def _schedule_restart(self, crashed: bool) -> None:
        if self.stopping or self.current is not None or self.starting is not None:
            return
        delay = self.restart_backoff.next_delay() if crashed else 0.0
        self.restart_at = time.monotonic() + delay
        log.info("restarting the runner in %.1f s", delay)

    # --- re-executing itself --------------------------------------------------------

    def _reexec(self, changed: list[str]) -> None:
        log.info("supervisor source changed (%s): checking the new version, then re-executing", ", ".join(changed))
        problem = self_reexec.check_new_version()
        if problem is not None:
            self.generation += 1
            self._record(self.generation, "failed", f"new supervisor does not start:\n{problem}")
            log.error("generation %d: new supervisor does not start; keeping this one:\n%s", self.generation, problem)
            return
        state = InheritedState(
            listen_fd=self.listening.fileno(),
            generation=self.generation,
            current=(self.current.pid, self.current.generation) if self.current is not None else None,
            stopping_runners=[(r.pid, r.generation) for r in self.stopping_runners.values()],
        )
        # Held back until the new program has its handlers (a SIGTERM meanwhile would
        # kill it with the runners still running); it unblocks them in its loop.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        runner_process.flush_logs()
        error = self_reexec.exec_self(state)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        self.generation += 1
        self._record(self.generation, "failed", f"re-executing the supervisor failed: {error}")
        log.error("re-executing the supervisor failed: %s", error)

    # --- stopping and reaping ---------------------------------------------------------

    def _stop(self, signame: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.restart_at = None
        self.reload_requested = False
        runners = self._runners()
        log.info("received %s: stopping %d runner(s)", signame, len(runners))
        for runner in runners:
            if runner is self.starting:
                self._close_ready_pipe(runner)
            self._stop_runner(runner, STOP_DEADLINE_SECONDS)
        self.current = None
        self.starting = None

    def _stop_runner(self, runner: Runner, grace: float) -> None:
        deadline = time.monotonic() + grace
        already_stopping = runner.pid in self.stopping_runners and runner.deadline is not None
        # A runner already draining keeps its earlier deadline; a starting one loses its ready deadline.
        runner.deadline = min(runner.deadline, deadline) if already_stopping and runner.deadline else deadline
        self.stopping_runners[runner.pid] = runner
        _kill(runner.pid, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_exit(pid, os.waitstatus_to_exitcode(status))

    def _on_exit(self, pid: int, code: int) -> None:
        if self.starting is not None and pid == self.starting.pid:
            runner = self.starting
            self._on_ready_pipe()  # its last words: ready (then it is current now), or why not
            if self.starting is runner:
                self._close_ready_pipe(runner)
                self.starting = None
                self._on_failed_start(runner, code)
                return
        if self.current is not None and pid == self.current.pid:
            runner = self.current
            self.current = None
            log.warning("%s exited on its own with %s", runner.describe(), describe_exit(code))
            self._schedule_restart(crashed=code != 0)
            return
        if pid in self.stopping_runners:
            runner = self.stopping_runners.pop(pid)
            log.info("%s exited with %s", runner.describe(), describe_exit(code))
        # else: the `--check` subprocess, reaped by subprocess itself, never lands here

    def _on_failed_start(self, runner: Runner, code: int) -> None:
        reason = runner.error or (
            f"not ready within {READY_DEADLINE_SECONDS:g} s"
            if runner.failed_start
            else f"runner exited with {describe_exit(code)} before it was ready"
        )
        if self.stopping:
            log.info("%s stopped before it was ready", runner.describe())
            return
        self._record(runner.generation, "failed", reason)
        log.error("%s failed (%s): %s", runner.describe(), describe_exit(code), reason)
        if self.current is None:
            if code == 2 and not self.ever_ready:
                log.error("❌ the first runner reports a bad configuration; exiting with code 2")
                self.exit_code = 2
                self.stopping = True
                return
            # Exit 0 before ready: someone stopped it (SIGTERM); start another at once.
            self._schedule_restart(crashed=code != 0 or runner.failed_start)
        if self.reload_requested:
            self.reload_requested = False
            self._reload()

    def _on_deadlines(self) -> None:
        now = time.monotonic()
        runner = self.starting
        if runner is not None and runner.deadline is not None and now >= runner.deadline:
            runner.failed_start = True
            runner.deadline = None
            log.error("%s not ready within %g s; killing it", runner.describe(), READY_DEADLINE_SECONDS)
            _kill(runner.pid, signal.SIGKILL)
        for runner in self.stopping_runners.values():
            if runner.deadline is not None and now >= runner.deadline:
                log.warning("%s did not stop in time; killing it", runner.describe())
                runner.deadline = None
                _kill(runner.pid, signal.SIGKILL)
        if self.restart_at is not None and now >= self.restart_at and not self.stopping:
            self._start_runner("restart")

    def _seconds_to_next_deadline(self) -> float | None:
        deadlines = [r.deadline for r in self._runners() if r.deadline is not None]
        if self.restart_at is not None:
            deadlines.append(self.restart_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _runners(self) -> list[Runner]:
        runners = [r for r in (self.current, self.starting) if r is not None]
        return runners + [r for r in self.stopping_runners.values() if r not in runners]

    def _record(self, generation: int, state: reload_status.ReloadState, error: str | None) -> None:
        try:
            reload_status.write(self.status_file, reload_status.ReloadOutcome.now(generation, state, error))
        except OSError as write_error:
            log.warning("⚠️  cannot write %s: %s", self.status_file, write_error)


# --- helpers ---------------------------------------------------------------------


def preload(modules: tuple[str, ...] = PRELOAD_MODULES) -> float:
    """Import `modules`; raise `PreloadError` naming the first one that starts a thread."""
    started = time.perf_counter()
    for name in modules:
        threads_before = thread_count()
        try:
            importlib.import_module(name)
        except ImportError as error:
            # The runner imports it again and fails with the full story; preloading is
            # only an optimisation.
            log.warning("⚠️  preloading %s failed: %s", name, error)
        if thread_count() > threads_before:
            raise PreloadError(f"importing {name} started a thread; remove it from PRELOAD_MODULES")
    return time.perf_counter() - started


def thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no procfs (not Linux): trust the interpreter's own count
        import threading

        return threading.active_count()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def listen(host: str, port: int) -> socket.socket:
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A restarted container binds again while connections of the last one linger in TIME_WAIT.
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind((host, port))
    listening.listen(LISTEN_BACKLOG)
    # Non-blocking for every runner (the flag belongs to the shared open file):
    # two runners woken for one connection both call accept(), and the loser must
    # get EAGAIN rather than block, or its shutdown() waits for the next connection.
    listening.setblocking(False)
    return listening


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already gone; reaped on the next SIGCHLD


def _remove_stale(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("⚠️  cannot remove the stale %s: %s", path, error)


def _wake_only(_signum: int, _frame: FrameType | None) -> None:
    """Python-level handler of the supervisor's signals: the wakeup fd does the work."""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    inherited = InheritedState.take_from(os.environ)
    if inherited is None:
        # Nothing to clean up yet: a stop during preload simply ends the process. A
        # reload asked for meanwhile is held back and honoured once the loop runs.
        # (Before this line, while the interpreter itself starts, SIGTERM still has
        # its default action: the process ends by the signal, just as promptly.)
        signal.signal(signal.SIGTERM, runner_process.exit_during_start)
        signal.signal(signal.SIGINT, runner_process.exit_during_start)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        config = Config.from_env(os.environ)
    except ConfigError as error:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        log.error("❌ invalid configuration: %s", error)
        return 2
    if "--check" in args:
        return 0  # imported and configured: a re-exec into this version will start
    logging.basicConfig(level=config.logging_level, format=LOG_FORMAT)
    log.info("supervisor pid %d starting%s", os.getpid(), " (re-executed)" if inherited is not None else "")
    try:
        seconds = preload()
    except PreloadError as error:
        log.error("❌ %s", error)
        return 1
    if (threads := thread_count()) != 1:
        log.error("❌ the supervisor has %d threads after preloading; forking it would be unsafe", threads)
        return 1
    log.info("preloaded %d modules in %.2f s", len(PRELOAD_MODULES), seconds)
    if inherited is not None:
        listening = socket.socket(fileno=inherited.listen_fd)
        os.set_inheritable(inherited.listen_fd, False)
    else:
        try:
            listening = listen(config.bind_host, config.health_port)
        except OSError as error:
            log.error("❌ cannot listen on %s:%d: %s", config.bind_host, config.health_port, error)
            return 1
    return Supervisor(config, listening, inherited).run()


if __name__ == "__main__":
    sys.exit(main())
