"""import_check's pure logic: RECORD parsing, collision detection, known shared names."""

from __future__ import annotations

from agent_runner.import_check import (
    Failure,
    Installed,
    check_imports,
    check_shared,
    shared_names,
    top_level_from_record,
)

STATEMENT = "from multipart import MultipartSegment"


def test_top_level_from_record() -> None:
    record = [
        "multipart/__init__.py",
        "python_multipart/multipart.py",
        "six.py",
        "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
        "python_multipart-0.0.34.dist-info/RECORD",
        "__pycache__/six.cpython-311.pyc",
        "../../../bin/tool",
        "bin/tool",
        "distutils-precedence.pth",
        "pkg.data/scripts/x",
    ]
    assert top_level_from_record(record) == ["_cffi_backend", "multipart", "python_multipart", "six"]


def test_collision_detected_when_not_known() -> None:
    installed = [
        Installed("multipart", ("multipart",)),
        Installed("python-multipart", ("multipart", "python_multipart")),
        Installed("pytest", ("_pytest", "py", "pytest")),
    ]
    shared = shared_names(installed)
    assert shared == {"multipart": ["multipart", "python-multipart"]}
    failures = check_shared(shared, {}, lambda statement: None)
    assert failures == [
        Failure("shared-name", "multipart", "owned by multipart, python-multipart and not in KNOWN_SHARED")
    ]


def test_known_shared_name_passes_when_exact_import_works() -> None:
    executed: list[str] = []

    def run(statement: str) -> str | None:
        executed.append(statement)
        return None

    shared = {"multipart": ["multipart", "python-multipart"]}
    assert check_shared(shared, {"multipart": STATEMENT}, run) == []
    assert executed == [STATEMENT]


def test_known_shared_name_fails_when_exact_import_fails() -> None:
    error = "ImportError: cannot import name 'MultipartSegment' from 'multipart'"
    shared = {"multipart": ["multipart", "python-multipart"]}
    failures = check_shared(shared, {"multipart": STATEMENT}, lambda statement: error)
    assert failures == [Failure("known-shared-import", "multipart", f"{STATEMENT}: {error}")]


def test_no_collision_no_failure() -> None:
    installed = [Installed("a", ("a",)), Installed("b", ("b",))]
    assert shared_names(installed) == {}


def test_check_imports_counts_and_reports() -> None:
    imported, failures = check_imports(
        ["good", "bad"], lambda module: None if module == "good" else "ModuleNotFoundError: bad"
    )
    assert imported == 1
    assert failures == [Failure("import", "bad", "ModuleNotFoundError: bad")]
