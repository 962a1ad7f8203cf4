"""In-image smoke check (`python -m agent_runner.import_check`): import what is installed.

The seed's bug was two distributions installing the same top-level name
(`multipart`): `from multipart import MultipartSegment` worked in a virtual
environment and failed only at run time. This check reads every installed
distribution's RECORD (`import_layout` says what counts as a collision and what
as a shared namespace package), imports each colliding name to see which
distribution wins, imports every module it can import without side effects, and
prints one JSON report on stdout:

    {"ok", "distributions", "modules_imported", "failures": [{check, module, error}],
     "collisions": [{name, distributions, winner, detail, fails, probe}],
     "namespace_packages": [{name, distributions, style}], "skipped", "jobs", "seconds"}

Whether a collision fails is the project's policy, which `cargo xtask` reads from
`[tool.stigmer.import-check]` in pyproject.toml and passes as arguments
(`--collisions warn|fail`, `--allow NAME`, `--skip MODULE`); this module only
reports, and exits 0 when nothing failed, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

from agent_runner.import_layout import (
    Clash,
    Distribution,
    analyse,
    own_modules,
    pick_winner,
    record_hash,
)

OWN_PACKAGE = "agent_runner"
# Importing these starts the runner, or is this check itself.
OWN_ENTRY_POINTS = ("agent_runner.__main__", "agent_runner.import_check")
# The statement that broke the seed, run whenever its name collides.
PROBES: dict[str, str] = {"multipart": "from multipart import MultipartSegment"}
# One process. Measured in the runner image with ~100 distributions (248 modules) on
# this project's 2-core machines: one process spends 1.25-1.4 s of CPU importing; two
# forked processes spend 1.75 s (contiguous chunks) to 2.2 s (round-robin), because
# shared dependencies such as pydantic and langchain_core load in both, so on idle
# cores they shorten the critical path by 0.2 s at most (best runs 1.23 s against
# 1.49 s), and on busy ones (the service starts beside the check) they were slower:
# median 3.35 s against 2.68 s at load 5. Two threads stayed within noise of one
# process (the GIL serialises the imports). The result is cached per image anyway.
DEFAULT_JOBS = 1
ALONE_TIMEOUT_SECONDS = 60
# A module that hangs while imported must not hold `cargo xtask dev`: at the deadline the
# stack of every thread goes to stderr (faulthandler's watchdog thread, which works even
# when the hang is inside C code), and a second later SIGALRM ends the check: exit 142
# through `docker exec`. xtask waits a little longer and shows where it hung.
DEFAULT_DEADLINE_SECONDS = 100


@dataclass(frozen=True)
class Failure:
    check: str  # "import", "import-order" or "collision"
    module: str
    error: str


@dataclass(frozen=True)
class Policy:
    """The project's choice, from `[tool.stigmer.import-check]` by way of the arguments."""

    collisions_fail: bool = False
    allowed_collisions: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()

    def fails(self, collision: str) -> bool:
        return self.collisions_fail and collision not in self.allowed_collisions

    def skips(self, module: str) -> bool:
        """A skipped name skips its submodules too."""
        parts = module.split(".")
        return any(".".join(parts[:depth]) in self.skip for depth in range(1, len(parts) + 1))


@dataclass(frozen=True)
class Winner:
    distribution: str | None
    how: str  # what importing the name showed, for the report's detail


@dataclass(frozen=True)
class Collision:
    name: str
    distributions: list[str]
    winner: str | None
    detail: str
    fails: bool
    probe: dict[str, str | bool | None] | None = None


# --- decisions (pure) ---------------------------------------------------------


def decide(
    clashes: Sequence[Clash],
    winners: Mapping[str, Winner],
    probe_errors: Mapping[str, str | None],
    policy: Policy,
) -> list[Collision]:
    """Collisions as reported: winner, probe result and the policy's verdict for each."""
    collisions = []
    for clash in clashes:
        winner = winners.get(clash.name, Winner(None, "not imported"))
        detail = f"{clash.detail}; {winner.how}"
        probe: dict[str, str | bool | None] | None = None
        statement = PROBES.get(clash.name)
        if statement is not None and clash.name in probe_errors:
            error = probe_errors[clash.name]
            probe = {"statement": statement, "ok": error is None, "error": error}
            detail += f"; `{statement}` " + ("works" if error is None else f"fails: {error}")
        collisions.append(
            Collision(clash.name, clash.distributions, winner.distribution, detail, policy.fails(clash.name), probe)
        )
    return collisions


def collision_failures(collisions: Iterable[Collision]) -> list[Failure]:
    return [
        Failure("collision", c.name, f"owned by {', '.join(c.distributions)}: {c.detail}")
        for c in collisions
        if c.fails
    ]


def import_failures(results: Iterable[tuple[str, str | None]], imports_alone: Callable[[str], bool]) -> list[Failure]:
    """Failed imports; one that works in a fresh interpreter was broken by a module imported before it."""
    failures = []
    for module, error in results:
        if error is None:
            continue
        if imports_alone(module):
            failures.append(
                Failure("import-order", module, f"{error} (it imports alone: a module imported before it breaks it)")
            )
        else:
            failures.append(Failure("import", module, error))
    return failures


def partition(modules: Sequence[str], jobs: int) -> list[list[str]]:
    """Contiguous runs of the sorted names: neighbours (`langgraph.*`, `google.*`) share imports."""
    ordered = sorted(modules)
    if not ordered:
        return []
    count = max(1, min(jobs, len(ordered)))
    size = -(-len(ordered) // count)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


# --- what is installed ----------------------------------------------------------


def installed_distributions() -> list[Distribution]:
    """Every distribution on sys.path, the first of each name only (the one Python uses)."""
    seen: dict[str, Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or "?"
        key = name.lower().replace("_", "-").replace(".", "-")
        if key in seen:
            continue
        files = dist.files
        top_level = dist.read_text("top_level.txt") if files is None else None
        seen[key] = Distribution(
            name=name,
            site=str(dist.locate_file("")),
            files={str(f): (f"{f.hash.mode}={f.hash.value}" if f.hash else None) for f in files or ()},
            top_level=tuple((top_level or "").split()),
        )
    return sorted(seen.values(), key=lambda dist: dist.name.lower())


def read_installed(site: str, path: str) -> str | None:
    try:
        return Path(site, path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def runner_modules() -> list[str]:
    """The runner's own modules, found on disk without importing them."""
    spec = importlib.util.find_spec(OWN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    return own_modules(OWN_PACKAGE, (str(p.relative_to(root)) for p in root.rglob("*.py")), OWN_ENTRY_POINTS)


# --- importing --------------------------------------------------------------------


def import_error(module: str) -> str | None:
    """Imports `module`; the error as text, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(module)
    except BaseException as error:  # noqa: BLE001 - SystemExit or KeyboardInterrupt at import count too
        return f"{type(error).__name__}: {error}"
    return None


def statement_error(statement: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(statement, {})  # noqa: S102 - statements come from PROBES only
    except BaseException as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    return None


def import_chunk(modules: list[str]) -> list[tuple[str, str | None]]:
    return [(module, import_error(module)) for module in modules]


def import_all(modules: list[str], jobs: int) -> list[tuple[str, str | None]]:
    """Imports here, or in `jobs` forked processes; a process that dies fails its chunk."""
    chunks = partition(modules, jobs)
    if len(chunks) <= 1:
        return import_chunk(modules)
    # fork: each worker starts from this process, without a new interpreter.
    results: list[tuple[str, str | None]] = []
    with ProcessPoolExecutor(len(chunks), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [(chunk, pool.submit(import_chunk, chunk)) for chunk in chunks]
        for chunk, future in futures:
            try:
                results.extend(future.result())
            except BrokenProcessPool as error:
                results.extend((module, f"the importing process died: {error}") for module in chunk)
    return results


def imports_alone(module: str) -> bool:
    """Whether `module` imports in a fresh interpreter, where nothing was imported first."""
    code = "import importlib, sys, warnings; warnings.simplefilter('ignore'); importlib.import_module(sys.argv[1])"
    # The same interpreter flags that shape sys.path (-S, -I, -E), so "alone" means the same installation.
    flags = [
        flag
        for flag, on in (("-S", sys.flags.no_site), ("-I", sys.flags.isolated), ("-E", sys.flags.ignore_environment))
        if on
    ]
    try:
        finished = subprocess.run(
            [sys.executable, *flags, "-c", code, module],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=ALONE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return finished.returncode == 0


def found_origin(name: str) -> str | None:
    """The file Python's finders pick for `name`, before anything runs."""
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # noqa: BLE001 - a parent package that fails to import: the import itself says why
        return None
    return spec.origin if spec is not None else None


def find_winner(clash: Clash, by_name: Mapping[str, Distribution]) -> Winner:
    """Imports the colliding name and maps the files Python found and loaded back to RECORDs.

    They can differ: python-multipart's `multipart/__init__.py` is found first and
    replaces itself in sys.modules with a `multipart.py` it finds on sys.path.
    """

    def owner(origin: str) -> tuple[str | None, str, str]:
        loaded = os.path.realpath(origin)
        listed = {
            dist: by_name[dist].files.get(path)
            for dist, path in clash.candidates
            if os.path.realpath(os.path.join(by_name[dist].site, path)) == loaded
        }
        actual = record_hash(Path(loaded).read_bytes()) if len(listed) > 1 else None
        winner, how = pick_winner(listed, actual)
        shown = next((path for dist, path in clash.candidates if dist in listed), origin)
        return winner, shown, how

    found = found_origin(clash.name)
    error = import_error(clash.name)
    module = sys.modules.get(clash.name)
    if error is not None or module is None:
        return Winner(None, f"`import {clash.name}` fails: {error}")
    origin = getattr(module.__spec__, "origin", None) or getattr(module, "__file__", None)
    if origin is None:
        return Winner(None, f"`import {clash.name}` gives a namespace package")
    winner, shown, how = owner(origin)
    loads = f"loads {shown}" + (f" of {winner}" if winner else "") + (f" ({how})" if how else "")
    if found and os.path.realpath(found) != os.path.realpath(origin):
        first, first_shown, _ = owner(found)
        finds = f"finds {first_shown}" + (f" of {first}" if first else "")
        return Winner(winner, f"`import {clash.name}` {finds}, which {loads}")
    return Winner(winner, f"`import {clash.name}` {loads}")


# --- the command -------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    policy: Policy
    jobs: int = DEFAULT_JOBS
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS


def parse_arguments(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m agent_runner.import_check")
    parser.add_argument("--collisions", choices=("warn", "fail"), default="warn")
    parser.add_argument("--allow", action="append", default=[], metavar="NAME", help="a collision that never fails")
    parser.add_argument("--skip", action="append", default=[], metavar="MODULE", help="never imported, nor below it")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="importing processes")
    parser.add_argument("--deadline", type=int, default=DEFAULT_DEADLINE_SECONDS, metavar="SECONDS")
    options = parser.parse_args(argv)
    policy = Policy(options.collisions == "fail", frozenset(options.allow), frozenset(options.skip))
    return Options(policy, max(1, options.jobs), max(1, options.deadline))


def run(policy: Policy, jobs: int) -> dict[str, object]:
    started = time.perf_counter()
    distributions = installed_distributions()
    layout = analyse(distributions, read_installed)
    by_name = {dist.name: dist for dist in distributions}
    # Colliding names first, before any other import could load one of them.
    winners = {c.name: find_winner(c, by_name) for c in layout.clashes if not policy.skips(c.name)}
    probe_errors = {name: statement_error(PROBES[name]) for name in winners if name in PROBES}
    collisions = decide(layout.clashes, winners, probe_errors, policy)
    wanted = layout.import_roots + runner_modules()
    modules = [module for module in wanted if not policy.skips(module)]
    results = import_all(modules, jobs)
    failures = import_failures(results, imports_alone) + collision_failures(collisions)
    return {
        "ok": not failures,
        "distributions": len(distributions),
        "modules_imported": sum(1 for _, error in results if error is None),
        "failures": [asdict(failure) for failure in failures],
        "collisions": [asdict(collision) for collision in collisions],
        "namespace_packages": [asdict(namespace) for namespace in layout.namespace_packages],
        "skipped": sorted(set(wanted) - set(modules)),
        "jobs": jobs,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    faulthandler.dump_traceback_later(options.deadline_seconds)
    signal.alarm(options.deadline_seconds + 1)
    # Modules may print while imported, from Python or from C: stdout carries only
    # the report, so file descriptor 1 points at stderr until the report is written.
    sys.stdout.flush()
    report_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        report = run(options.policy, options.jobs)
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        sys.stdout.flush()
        os.dup2(report_fd, 1)
        os.close(report_fd)
    with open(1, "w", encoding="utf-8", closefd=False) as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # Leave without the interpreter's teardown: with ~250 third-party modules loaded,
    # their atexit handlers and module cleanup took 0.6 to 1.2 s in the runner image,
    # and none of it is this check's business. The report is already written.
    os._exit(code)
