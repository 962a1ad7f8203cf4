"""import_check and import_layout: decisions on plain data, then the real check on real files.

The second half installs tiny distributions by hand (files plus a dist-info with a
RECORD, as pip writes them) into a temporary site directory and runs
`python -m agent_runner.import_check` there, so every statement the report talks
about (the winner's import, the seed's `from multipart import MultipartSegment`)
really runs.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from agent_runner.import_check import (
    PROBES,
    Clash,
    Collision,
    Failure,
    Options,
    Policy,
    Winner,
    collision_failures,
    decide,
    import_failures,
    parse_arguments,
    partition,
)
from agent_runner.import_layout import (
    Distribution,
    NamespacePackage,
    analyse,
    own_modules,
    pick_winner,
    record_hash,
)

SRC = Path(__file__).resolve().parents[1] / "src"
# The check runs with `-S` (no site-packages), so the runner's own modules that need its
# dependencies (temporalio, langgraph) cannot import there: the real runs see the package as
# the check needs it, its stdlib-only modules, copied into a directory of their own.
STDLIB_ONLY = ("__init__.py", "import_check.py", "import_layout.py")
CHECK_SRC = Path(tempfile.mkdtemp(prefix="check-src-"))
(CHECK_SRC / "agent_runner").mkdir()
for _name in STDLIB_ONLY:
    shutil.copy(SRC / "agent_runner" / _name, CHECK_SRC / "agent_runner" / _name)
atexit.register(shutil.rmtree, CHECK_SRC, True)
SEED_STATEMENT = "from multipart import MultipartSegment"
PKGUTIL_INIT = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
PKG_RESOURCES_INIT = "__import__('pkg_resources').declare_namespace(__name__)\n"


def dist(name: str, *paths: str, site: str = "/site") -> Distribution:
    return Distribution(name, site, {path: None for path in paths})


def no_init(site: str, path: str) -> str | None:
    raise AssertionError(f"read {path} although no directory is shared with an __init__.py")


# --- import_layout: RECORD data in, layout out ------------------------------------


def test_the_seed_pair_is_one_collision_naming_both_distributions() -> None:
    layout = analyse(
        [
            dist("multipart", "multipart.py", "multipart-1.3.0.dist-info/RECORD"),
            dist(
                "python-multipart",
                "multipart/__init__.py",
                "multipart/decoders.py",
                "python_multipart/__init__.py",
                "python_multipart/multipart.py",
            ),
        ],
        no_init,
    )
    assert layout.clashes == [
        Clash(
            "multipart",
            ["multipart", "python-multipart"],
            "a module and a package: multipart.py (multipart), multipart/ (python-multipart)",
            [("multipart", "multipart.py"), ("python-multipart", "multipart/__init__.py")],
        )
    ]
    assert layout.import_roots == ["multipart", "python_multipart"]
    assert layout.namespace_packages == []


def test_pep420_namespaces_are_shared_not_collisions_and_their_portions_are_imported() -> None:
    layout = analyse(
        [
            dist(
                "protobuf", "google/protobuf/__init__.py", "google/protobuf/message.py", "google/_upb/_message.abi3.so"
            ),
            dist("google-auth", "google/auth/__init__.py", "google/oauth2/__init__.py", "google/py.typed"),
            dist("googleapis-common-protos", "google/api/http_pb2.py", "google/py.typed"),
            dist("langgraph", "langgraph/graph/__init__.py", "langgraph/constants.py", "langgraph/py.typed"),
            dist(
                "langgraph-checkpoint",
                "langgraph/checkpoint/base/__init__.py",
                "langgraph/checkpoint/memory/__init__.py",
            ),
            dist("langgraph-checkpoint-sqlite", "langgraph/checkpoint/sqlite/__init__.py"),
            dist("langgraph-prebuilt", "langgraph/prebuilt/__init__.py"),
        ],
        no_init,
    )
    assert layout.clashes == []
    assert layout.namespace_packages == [
        NamespacePackage("google", ["google-auth", "googleapis-common-protos", "protobuf"], "pep420"),
        NamespacePackage(
            "langgraph",
            ["langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "langgraph-prebuilt"],
            "pep420",
        ),
        NamespacePackage("langgraph.checkpoint", ["langgraph-checkpoint", "langgraph-checkpoint-sqlite"], "pep420"),
    ]
    assert layout.import_roots == [
        "google._upb._message",
        "google.api.http_pb2",
        "google.auth",
        "google.oauth2",
        "google.protobuf",
        "langgraph.checkpoint.base",
        "langgraph.checkpoint.memory",
        "langgraph.checkpoint.sqlite",
        "langgraph.constants",
        "langgraph.graph",
        "langgraph.prebuilt",
    ]


@pytest.mark.parametrize(("init", "style"), [(PKGUTIL_INIT, "pkgutil"), (PKG_RESOURCES_INIT, "pkg_resources")])
def test_declared_namespaces_share_their_init_without_colliding(init: str, style: str) -> None:
    read: list[tuple[str, str]] = []

    def read_init(site: str, path: str) -> str | None:
        read.append((site, path))
        return init

    layout = analyse(
        [
            dist("zope-interface", "zope/__init__.py", "zope/interface/__init__.py"),
            dist("zope-event", "zope/__init__.py", "zope/event/__init__.py"),
        ],
        read_init,
    )
    assert read == [("/site", "zope/__init__.py")]
    assert layout.clashes == []
    assert layout.namespace_packages == [NamespacePackage("zope", ["zope-event", "zope-interface"], style)]
    assert layout.import_roots == ["zope.event", "zope.interface"]


def test_a_shared_init_that_declares_no_namespace_is_one_path_written_twice() -> None:
    layout = analyse(
        [dist("vendor-a", "vendor/__init__.py", "vendor/a.py"), dist("vendor-b", "vendor/__init__.py", "vendor/b.py")],
        lambda site, path: "VERSION = 1\n",
    )
    assert layout.namespace_packages == []
    assert layout.import_roots == ["vendor"]
    assert [(c.name, c.distributions, c.detail) for c in layout.clashes] == [
        ("vendor", ["vendor-a", "vendor-b"], "both write vendor/__init__.py")
    ]


def test_one_module_file_written_twice_is_one_collision() -> None:
    layout = analyse([dist("six", "six.py"), dist("vendored-six", "six.py", "vendored/__init__.py")], no_init)
    assert layout.clashes == [
        Clash("six", ["six", "vendored-six"], "both write six.py", [("six", "six.py"), ("vendored-six", "six.py")])
    ]


def test_the_same_path_in_two_site_directories_is_not_written_twice() -> None:
    layout = analyse([dist("six", "six.py", site="/venv"), dist("six-copy", "six.py", site="/user")], no_init)
    assert layout.clashes == []


def test_two_modules_of_one_name_and_a_clash_inside_a_namespace() -> None:
    layout = analyse(
        [
            dist("speedups", "_speedups.cpython-311-x86_64-linux-gnu.so"),
            dist("speedups-py", "_speedups.py"),
            dist("ns-one", "ns/tool.py"),
            dist("ns-two", "ns/tool/__init__.py"),
        ],
        no_init,
    )
    assert [(c.name, c.distributions, c.detail) for c in layout.clashes] == [
        (
            "_speedups",
            ["speedups", "speedups-py"],
            "two modules: _speedups.cpython-311-x86_64-linux-gnu.so (speedups), _speedups.py (speedups-py)",
        ),
        ("ns.tool", ["ns-one", "ns-two"], "a module and a package: ns/tool.py (ns-one), ns/tool/ (ns-two)"),
    ]
    assert layout.namespace_packages == [NamespacePackage("ns", ["ns-one", "ns-two"], "pep420")]


def test_what_is_never_imported() -> None:
    layout = analyse(
        [
            dist(
                "tool",
                "tool/__init__.py",
                "tool/__main__.py",
                "setup.py",
                "tests/__init__.py",
                "test/test_tool.py",
                "conftest.py",
                "this.py",
                "../../../bin/tool",
                "bin/tool",
                "tool-1.0.dist-info/RECORD",
                "tool-1.0.data/scripts/run",
                "__pycache__/six.cpython-311.pyc",
                "tool-stubs/__init__.pyi",
                "distutils-precedence.pth",
                "README.md",
            )
        ],
        no_init,
    )
    assert layout.import_roots == ["tool"]
    assert layout.clashes == []


def test_distributions_without_record_fall_back_to_top_level_txt() -> None:
    legacy = Distribution("legacy", "/site", {}, ("legacy", "_legacy_c", "tests"))
    assert analyse([legacy], no_init).import_roots == ["_legacy_c", "legacy"]


def test_own_modules_leave_out_what_starts_the_process() -> None:
    paths = [
        "__init__.py",
        "__main__.py",
        "worker.py",
        "import_check.py",
        "agents/__init__.py",
        "agents/echo.py",
        "agents/__pycache__/echo.cpython-311.pyc",
        "py.typed",
    ]
    assert own_modules("agent_runner", paths, ["agent_runner.import_check"]) == [
        "agent_runner",
        "agent_runner.agents",
        "agent_runner.agents.echo",
        "agent_runner.worker",
    ]


def test_record_hash_is_the_wheel_spec_encoding() -> None:
    # sha256 of nothing, urlsafe base64 without padding, as in every RECORD.
    assert record_hash(b"") == "sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"


def test_pick_winner() -> None:
    assert pick_winner({"python-multipart": "sha256=a"}, None) == ("python-multipart", "")
    assert pick_winner({"a": "sha256=1", "b": "sha256=2"}, "sha256=2") == (
        "b",
        "the file's hash is the one its RECORD gives",
    )
    assert pick_winner({"a": "sha256=1", "b": "sha256=1"}, "sha256=1") == (None, "identical files from a, b")
    assert pick_winner({"a": "sha256=1", "b": "sha256=2"}, "sha256=3")[0] is None
    assert pick_winner({}, None) == (None, "a file none of them lists")


# --- import_check: policy and report decisions ---------------------------------------


def test_the_probe_is_the_seed_statement() -> None:
    assert PROBES == {"multipart": SEED_STATEMENT}


def test_policy_fails_only_when_asked_and_not_allowed() -> None:
    assert not Policy().fails("multipart")
    assert Policy(collisions_fail=True).fails("multipart")
    assert not Policy(collisions_fail=True, allowed_collisions=frozenset({"multipart"})).fails("multipart")
    skip = Policy(skip=frozenset({"google.genai", "redis"}))
    assert [skip.skips(m) for m in ["redis", "redis.asyncio", "google.genai.types", "google.auth", "redisx"]] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_decide_reports_winner_probe_and_verdict() -> None:
    clashes = [
        Clash("multipart", ["multipart", "python-multipart"], "a module and a package"),
        Clash("six", ["a", "b"], "both write six.py"),
    ]
    winners = {"multipart": Winner("python-multipart", "`import multipart` loads multipart/__init__.py")}
    error = "ImportError: cannot import name 'MultipartSegment' from 'multipart'"
    policy = Policy(collisions_fail=True, allowed_collisions=frozenset({"six"}))
    collisions = decide(clashes, winners, {"multipart": error}, policy)
    assert collisions == [
        Collision(
            "multipart",
            ["multipart", "python-multipart"],
            "python-multipart",
            f"a module and a package; `import multipart` loads multipart/__init__.py; `{SEED_STATEMENT}` fails: {error}",
            True,
            {"statement": SEED_STATEMENT, "ok": False, "error": error},
        ),
        Collision("six", ["a", "b"], None, "both write six.py; not imported", False, None),
    ]
    assert collision_failures(collisions) == [
        Failure("collision", "multipart", f"owned by multipart, python-multipart: {collisions[0].detail}")
    ]
    assert collision_failures(decide(clashes, winners, {}, Policy())) == []


def test_a_failure_is_tried_alone_to_tell_order_from_breakage() -> None:
    tried: list[str] = []

    def alone(module: str) -> bool:
        tried.append(module)
        return module == "setuptools"

    results = [("pip", None), ("setuptools", "AssertionError: distutils"), ("broken", "ValueError: no")]
    assert import_failures(results, alone) == [
        Failure(
            "import-order",
            "setuptools",
            "AssertionError: distutils (it imports alone: a module imported before it breaks it)",
        ),
        Failure("import", "broken", "ValueError: no"),
    ]
    assert tried == ["setuptools", "broken"]


def test_partition_keeps_neighbours_together() -> None:
    modules = ["e", "a", "d", "b", "c"]
    assert partition(modules, 1) == [["a", "b", "c", "d", "e"]]
    assert partition(modules, 2) == [["a", "b", "c"], ["d", "e"]]
    assert partition(["a"], 4) == [["a"]]
    assert partition([], 2) == []


def test_arguments_carry_the_policy() -> None:
    options = parse_arguments(["--collisions", "fail", "--allow", "multipart", "--skip", "a", "--skip", "b.c"])
    assert options == Options(Policy(True, frozenset({"multipart"}), frozenset({"a", "b.c"})), 1, 100)
    assert parse_arguments(["--jobs", "2", "--deadline", "5"]) == Options(Policy(), 2, 5)
    with pytest.raises(SystemExit):
        parse_arguments(["--collisions", "maybe"])


# --- the real check on distributions installed by hand --------------------------------

# Every module below appends its name to $IMPORT_LOG when imported, so the tests see
# exactly what the check imported.
LOGS = "import os\nwith open(os.environ['IMPORT_LOG'], 'a') as log:\n    log.write(__name__ + '\\n')\n"


def install(site: Path, name: str, files: dict[str, str]) -> None:
    """Writes `files` and a dist-info whose RECORD lists them, as pip does."""
    info = f"{name.replace('-', '_')}-1.0.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"}
    lines = []
    for path, text in files.items():
        target = site / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        lines.append(f"{path},{record_hash(text.encode())},{len(text.encode())}")
    lines.append(f"{info}/RECORD,,")
    (site / info / "RECORD").write_text("\n".join(lines) + "\n")


def run_check(tmp_path: Path, path: list[Path], *arguments: str) -> tuple[int, dict, list[str]]:
    """Runs the check with only `path` and the check's own package on sys.path (`-S`: no
    site-packages)."""
    log = tmp_path / "imported.log"
    log.write_text("")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*map(str, path), str(CHECK_SRC)]),
        "IMPORT_LOG": str(log),
    }
    finished = subprocess.run(
        [sys.executable, "-S", "-m", "agent_runner.import_check", *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode in (0, 1), finished.stderr
    return finished.returncode, json.loads(finished.stdout), log.read_text().split()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site directory with every case: module against package, one path written twice,
    PEP 420 and pkgutil namespaces, a broken module, a noisy one, one with side effects,
    and files never to import (`__main__`, `setup.py`, `tests`)."""
    site = tmp_path / "site-packages"
    install(site, "clash-module", {"clash.py": LOGS})
    install(site, "clash-package", {"clash/__init__.py": LOGS})
    install(site, "same-a", {"shared_mod.py": LOGS + "ORIGIN = 'a'\n"})
    # Installed second: its file is the one on disk.
    install(site, "same-b", {"shared_mod.py": LOGS + "ORIGIN = 'b'\n"})
    install(site, "nsp-one", {"nsp/one/__init__.py": LOGS})
    install(site, "nsp-two", {"nsp/two.py": LOGS, "nsp/py.typed": ""})
    install(site, "pku-alpha", {"pku/__init__.py": PKGUTIL_INIT, "pku/alpha/__init__.py": LOGS})
    install(site, "pku-beta", {"pku/__init__.py": PKGUTIL_INIT, "pku/beta.py": LOGS})
    install(site, "broken", {"broken.py": LOGS + "raise RuntimeError('broken at import')\n"})
    install(site, "noisy", {"noisy.py": LOGS + "print('noise on stdout')\n"})
    install(site, "sideeffect", {"sideeffect.py": LOGS})
    install(
        site,
        "tooling",
        {"tooling/__init__.py": LOGS, "tooling/__main__.py": LOGS, "setup.py": LOGS, "tests/__init__.py": LOGS},
    )
    return site


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_check_reports_every_case_from_real_imports(tmp_path: Path, site: Path, jobs: str) -> None:
    code, report, imported = run_check(tmp_path, [site], "--skip", "sideeffect", "--jobs", jobs)
    assert code == 1
    assert report["ok"] is False
    assert report["distributions"] == 12
    assert report["failures"] == [{"check": "import", "module": "broken", "error": "RuntimeError: broken at import"}]
    assert report["collisions"] == [
        {
            "name": "clash",
            "distributions": ["clash-module", "clash-package"],
            # A directory is found before a module of the same name in one site directory.
            "winner": "clash-package",
            "detail": "a module and a package: clash.py (clash-module), clash/ (clash-package); "
            "`import clash` loads clash/__init__.py of clash-package",
            "fails": False,
            "probe": None,
        },
        {
            "name": "shared_mod",
            "distributions": ["same-a", "same-b"],
            "winner": "same-b",
            "detail": "both write shared_mod.py; `import shared_mod` loads shared_mod.py of same-b "
            "(the file's hash is the one its RECORD gives)",
            "fails": False,
            "probe": None,
        },
    ]
    assert report["namespace_packages"] == [
        {"name": "nsp", "distributions": ["nsp-one", "nsp-two"], "style": "pep420"},
        {"name": "pku", "distributions": ["pku-alpha", "pku-beta"], "style": "pkgutil"},
    ]
    assert report["skipped"] == ["sideeffect"]
    assert sorted(set(imported)) == [
        "broken",
        "clash",
        "noisy",
        "nsp.one",
        "nsp.two",
        "pku.alpha",
        "pku.beta",
        "shared_mod",
        "tooling",
    ]
    # The check's own modules are imported too (the runner's source is on the path).
    assert report["modules_imported"] == 8 + len(own_modules_on_disk())


def own_modules_on_disk() -> list[str]:
    root = CHECK_SRC / "agent_runner"
    return own_modules(
        "agent_runner",
        (str(p.relative_to(root)) for p in root.rglob("*.py")),
        ["agent_runner.__main__", "agent_runner.import_check"],
    )


def test_collisions_fail_when_the_project_says_so_except_allowed_ones(tmp_path: Path, site: Path) -> None:
    (site / "broken.py").write_text("")
    code, report, _ = run_check(tmp_path, [site], "--collisions", "fail", "--allow", "clash", "--skip", "sideeffect")
    assert code == 1
    assert [(f["check"], f["module"]) for f in report["failures"]] == [("collision", "shared_mod")]
    assert [(c["name"], c["fails"]) for c in report["collisions"]] == [("clash", False), ("shared_mod", True)]
    code, report, _ = run_check(tmp_path, [site], "--skip", "sideeffect")
    assert (code, report["ok"], report["failures"]) == (0, True, [])


def test_a_module_broken_only_by_one_imported_before_it_is_an_order_failure(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    # Imported first (sorted): blocks zzz_dep for everything imported after it.
    install(site, "aaa-breaker", {"aaa_breaker.py": "import sys\nsys.modules['zzz_dep'] = None\n"})
    install(site, "zzz-victim", {"zzz_victim.py": "import zzz_dep\n", "zzz_dep.py": ""})
    code, report, _ = run_check(tmp_path, [site])
    assert code == 1
    assert report["failures"] == [
        {
            "check": "import-order",
            "module": "zzz_dep",
            "error": "ModuleNotFoundError: import of zzz_dep halted; None in sys.modules "
            "(it imports alone: a module imported before it breaks it)",
        },
        {
            "check": "import-order",
            "module": "zzz_victim",
            "error": "ModuleNotFoundError: import of zzz_dep halted; None in sys.modules "
            "(it imports alone: a module imported before it breaks it)",
        },
    ]


def test_a_module_that_hangs_while_imported_ends_the_check_at_its_deadline(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    install(site, "hangs", {"hangs.py": "import time\ntime.sleep(60)\n"})
    finished = subprocess.run(
        [sys.executable, "-S", "-m", "agent_runner.import_check", "--deadline", "1"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(CHECK_SRC)])},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert finished.returncode == -signal.SIGALRM
    assert finished.stdout == b""
    # Where it hung, most recent call first, for xtask to show.
    assert f'File "{site / "hangs.py"}", line 2 in <module>' in finished.stderr.decode()


def copy_installed(site: Path, name: str) -> None:
    """Copies an installed distribution (its files and dist-info) into `site`."""
    installed = importlib.metadata.distribution(name)
    for file in installed.files or ():
        if ".." in file.parts or "__pycache__" in file.parts:
            continue
        target = site / str(file)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(str(installed.locate_file(file))), target)


MULTIPART_PY = "class MultipartSegment:\n    pass\n"


def test_the_seed_pair_with_the_real_python_multipart_shim(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    copy_installed(site, "python-multipart")
    install(site, "multipart", {"multipart.py": MULTIPART_PY})
    code, report, _ = run_check(tmp_path, [site])
    assert code == 0
    assert report["collisions"] == [
        {
            "name": "multipart",
            "distributions": ["multipart", "python-multipart"],
            "winner": "multipart",
            "detail": "a module and a package: multipart.py (multipart), multipart/ (python-multipart); "
            "`import multipart` finds multipart/__init__.py of python-multipart, which loads multipart.py of "
            f"multipart; `{SEED_STATEMENT}` works",
            "fails": False,
            "probe": {"statement": SEED_STATEMENT, "ok": True, "error": None},
        }
    ]


def test_the_seeds_failure_when_multipart_py_is_no_file_on_sys_path(tmp_path: Path) -> None:
    # The shim looks for a multipart.py *file* on sys.path; in a frozen binary there is
    # none, so the shim wins and re-exports python_multipart. A zip on sys.path is
    # such a place: importable, but no file.
    site = tmp_path / "site-packages"
    copy_installed(site, "python-multipart")
    zipped = tmp_path / "multipart.zip"
    install(tmp_path / "unzipped", "multipart", {"multipart.py": MULTIPART_PY})
    with zipfile.ZipFile(zipped, "w") as archive:
        for file in (tmp_path / "unzipped").rglob("*"):
            archive.write(file, file.relative_to(tmp_path / "unzipped").as_posix())
    code, report, _ = run_check(tmp_path, [site, zipped])
    assert code == 0
    [collision] = report["collisions"]
    assert collision["name"] == "multipart"
    assert collision["distributions"] == ["multipart", "python-multipart"]
    assert collision["winner"] == "python-multipart"
    assert collision["probe"]["ok"] is False
    assert collision["probe"]["error"].startswith("ImportError: cannot import name 'MultipartSegment'")
    assert f"`{SEED_STATEMENT}` fails: ImportError" in collision["detail"]


def test_python_multipart_alone_is_no_collision(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    copy_installed(site, "python-multipart")
    code, report, _ = run_check(tmp_path, [site], "--collisions", "fail")
    assert (code, report["ok"], report["collisions"], report["failures"]) == (0, True, [], [])
    assert report["distributions"] == 1
