"""In-image smoke check (`python -m agent_runner.import_check`): import what is installed.

The seed's bug was two distributions installing the same top-level name
(`multipart`), which broke `from multipart import MultipartSegment` only at run
time. This check lists every installed distribution, imports each top-level module
it provides, flags top-level names owned by more than one distribution (unless a
`KNOWN_SHARED` entry names the exact import that must still work), imports the
runner's own modules, and prints a JSON report; exit 0 when nothing failed.

The decisions are pure functions over `(distribution, top-level names)` data, so
tests exercise them without installing anything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import pkgutil
import sys
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping

# Top-level name -> the exact statement that must succeed when several
# distributions own that name. `python-multipart` installs a `multipart/` shim
# next to its real `python_multipart` package, and the unrelated `multipart`
# distribution installs `multipart.py`; this runner only ever imports
# `python_multipart`, so that is the import that has to keep working.
KNOWN_SHARED: dict[str, str] = {
    "multipart": "from python_multipart import MultipartParser",
}

SKIPPED_TOP_LEVEL = {"__pycache__", "bin", "..", ""}
EXTENSION_SUFFIXES = (".so", ".pyd")


@dataclass(frozen=True)
class Failure:
    check: str
    module: str
    error: str


@dataclass(frozen=True)
class Installed:
    distribution: str
    top_level: tuple[str, ...]


def top_level_from_record(paths: Iterable[str]) -> list[str]:
    """Derive importable top-level names from a RECORD's file paths."""
    names: set[str] = set()
    for path in paths:
        parts = path.replace("\\", "/").split("/")
        head = parts[0]
        if head in SKIPPED_TOP_LEVEL or head.endswith((".dist-info", ".data", ".egg-info")):
            continue
        if len(parts) > 1:
            names.add(head)
        elif head.endswith(".py"):
            names.add(head[: -len(".py")])
        elif head.endswith(EXTENSION_SUFFIXES):
            names.add(head.split(".", 1)[0])
    return sorted(name for name in names if name.isidentifier())


def shared_names(installed: Iterable[Installed]) -> dict[str, list[str]]:
    """Top-level names owned by more than one distribution -> their owners."""
    owners: dict[str, set[str]] = defaultdict(set)
    for item in installed:
        for name in item.top_level:
            owners[name].add(item.distribution)
    return {name: sorted(dists) for name, dists in sorted(owners.items()) if len(dists) > 1}


def check_shared(
    shared: Mapping[str, list[str]],
    known_shared: Mapping[str, str],
    run_statement: Callable[[str], str | None],
) -> list[Failure]:
    """A shared name fails unless it is known and its exact import statement works."""
    failures = []
    for name, owners in shared.items():
        statement = known_shared.get(name)
        if statement is None:
            failures.append(
                Failure("shared-name", name, f"owned by {', '.join(owners)} and not in KNOWN_SHARED")
            )
        elif (error := run_statement(statement)) is not None:
            failures.append(Failure("known-shared-import", name, f"{statement}: {error}"))
    return failures


def check_imports(modules: Iterable[str], import_module: Callable[[str], str | None]) -> tuple[int, list[Failure]]:
    imported = 0
    failures = []
    for module in modules:
        error = import_module(module)
        if error is None:
            imported += 1
        else:
            failures.append(Failure("import", module, error))
    return imported, failures


def installed_distributions() -> list[Installed]:
    seen: dict[str, Installed] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or "?"
        key = name.lower().replace("_", "-")
        if key in seen:
            continue  # the same distribution reachable twice on sys.path
        top_level_txt = dist.read_text("top_level.txt")
        if top_level_txt is not None:
            top_level = sorted(n for n in top_level_txt.split() if n.isidentifier())
        else:
            top_level = top_level_from_record(str(f) for f in dist.files or ())
        seen[key] = Installed(name, tuple(top_level))
    return sorted(seen.values(), key=lambda item: item.distribution.lower())


def own_modules() -> list[str]:
    import agent_runner

    return ["agent_runner"] + sorted(
        info.name
        for info in pkgutil.walk_packages(agent_runner.__path__, "agent_runner.")
        if not info.name.endswith("__main__")  # importing it would start the runner
    )


def _import(module: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(module)
    except BaseException as error:  # noqa: BLE001 - SystemExit from a module counts too
        return f"{type(error).__name__}: {error}"
    return None


def _run_statement(statement: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(statement, {})  # noqa: S102 - statements come from KNOWN_SHARED only
    except BaseException as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    return None


def main() -> int:
    installed = installed_distributions()
    third_party = sorted({name for item in installed for name in item.top_level})
    imported, failures = check_imports(third_party, _import)
    own_imported, own_failures = check_imports(own_modules(), _import)
    shared = shared_names(installed)
    failures += own_failures + check_shared(shared, KNOWN_SHARED, _run_statement)
    report = {
        "ok": not failures,
        "distributions": len(installed),
        "modules_imported": imported + own_imported,
        "failures": [asdict(f) for f in failures],
        "shared_names": shared,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
