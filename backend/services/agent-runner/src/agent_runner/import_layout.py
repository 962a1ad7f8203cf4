"""What the installed distributions' RECORDs say, for `import_check`: pure functions over data.

`analyse` derives from each distribution's RECORD paths
(https://packaging.python.org/en/latest/specifications/recording-installed-packages/):
- the modules to import: each distribution's top-level module or package, or,
  inside a namespace package, the first module or package below it;
- the namespace packages several distributions share, which are not collisions:
  directories without `__init__.py` (PEP 420: `google`, `langgraph`) and
  directories whose `__init__.py` is a pkgutil or pkg_resources namespace
  declaration, the same file written by every portion
  (https://packaging.python.org/en/latest/guides/packaging-namespace-packages/);
- the collisions: one path written by two distributions, or one name provided as
  a module by one distribution and as a module or package by another
  (`multipart.py` beside `multipart/`), each once, by its dotted name.

Nothing here touches the file system or imports anything: `analyse` is handed a
function that reads an installed `__init__.py`, so tests run on plain data.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Never imported: script entry points, test suites, build scripts, and the two
# standard-library jokes whose import prints or opens a browser.
NEVER_IMPORTED = frozenset({"__main__", "setup", "conftest", "test", "tests", "this", "antigravity"})
# Path components that are not installed modules: scripts outside site-packages, bytecode.
NOT_IMPORTED_DIRS = ("..", "__pycache__")
METADATA_SUFFIXES = (".dist-info", ".data", ".egg-info")
# Extension modules are named `<module>.<abi tag>.so`, `<module>.abi3.so` or `<module>.pyd`.
EXTENSION_SUFFIXES = (".so", ".pyd")
# The two namespace declarations of the packaging guide above.
PKGUTIL_MARK = "extend_path"
PKG_RESOURCES_MARK = "declare_namespace"


@dataclass(frozen=True)
class Distribution:
    """One installed distribution: RECORD paths (relative to `site`) and their hashes."""

    name: str
    site: str
    files: Mapping[str, str | None]
    # Only for distributions without a RECORD (old egg-info installs).
    top_level: tuple[str, ...] = ()


@dataclass(frozen=True)
class NamespacePackage:
    name: str
    distributions: list[str]
    style: str  # "pep420", "pkgutil" or "pkg_resources"


@dataclass(frozen=True)
class Clash:
    """A collision as the RECORDs show it, before anything is imported."""

    name: str
    distributions: list[str]
    detail: str
    # (distribution, RECORD path) pairs the name's module may be loaded from.
    candidates: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    import_roots: list[str]
    namespace_packages: list[NamespacePackage]
    clashes: list[Clash]


def module_name(filename: str) -> str | None:
    """`six.py` -> `six`, `_cffi_backend.cpython-311-x86_64-linux-gnu.so` -> `_cffi_backend`."""
    if filename.endswith(".py"):
        return filename[: -len(".py")]
    if filename.endswith(EXTENSION_SUFFIXES):
        return filename.split(".", 1)[0]
    return None


def importable_parts(path: str) -> list[str] | None:
    """The path's components when it lies where Python imports from, else None."""
    parts = path.replace("\\", "/").split("/")
    head = parts[0]
    if head.endswith(METADATA_SUFFIXES) or any(part in NOT_IMPORTED_DIRS for part in parts):
        return None
    if len(parts) == 1:
        name = module_name(head)
        return parts if name is not None and name.isidentifier() else None
    return parts if head.isidentifier() else None


def namespace_style(init_text: str | None) -> str | None:
    """The namespace kind of a directory whose `__init__.py` holds `init_text` (None: no file)."""
    if init_text is None:
        return "pep420"
    if PKGUTIL_MARK in init_text:
        return "pkgutil"
    if PKG_RESOURCES_MARK in init_text:
        return "pkg_resources"
    return None


def is_importable_name(dotted: str) -> bool:
    return all(part.isidentifier() and part not in NEVER_IMPORTED for part in dotted.split("."))


@dataclass(frozen=True)
class _Entry:
    distribution: str
    parts: list[str]  # what is left of the path below the directory being looked at
    path: str  # the whole RECORD path

    def is_module_file(self) -> bool:
        return len(self.parts) == 1

    def is_init(self) -> bool:
        return len(self.parts) == 2 and module_name(self.parts[1]) == "__init__"


def analyse(distributions: Sequence[Distribution], read_init: Callable[[str, str], str | None]) -> Layout:
    """Import roots, shared namespace packages and collisions, from the RECORDs.

    `read_init(site, path)` returns an installed `__init__.py`'s text; it is asked
    only about directories that several distributions write into.
    """
    site_of = {dist.name: dist.site for dist in distributions}
    roots: set[str] = set()
    namespaces: list[NamespacePackage] = []
    clashes: dict[str, Clash] = {}
    namespace_dirs: set[str] = set()

    def walk(prefix: str, level: list[_Entry]) -> None:
        by_name: dict[str, list[_Entry]] = defaultdict(list)
        for entry in level:
            name = module_name(entry.parts[0]) if entry.is_module_file() else entry.parts[0]
            if name is not None and name != "__init__" and name.isidentifier():
                by_name[name].append(entry)
        for name, group in sorted(by_name.items()):
            dotted = f"{prefix}{name}"
            owners = sorted({e.distribution for e in group})
            module_files = {e.path for e in group if e.is_module_file()}
            if module_files:
                roots.add(dotted)
                # One file written by several distributions is left to the same-path pass.
                if len(owners) > 1 and not (len(module_files) == 1 and all(e.is_module_file() for e in group)):
                    clashes[dotted] = _module_clash(dotted, group, owners)
                continue
            inits = [e for e in group if e.is_init()]
            if not inits:
                style: str | None = "pep420"
            elif len(owners) > 1:
                style = namespace_style(read_init(site_of[inits[0].distribution], inits[0].path))
            else:
                style = None
            if style is None:
                roots.add(dotted)
                continue
            namespace_dirs.add(dotted)
            if len(owners) > 1:
                namespaces.append(NamespacePackage(dotted, owners, style))
            walk(f"{dotted}.", [_Entry(e.distribution, e.parts[1:], e.path) for e in group])

    entries = [
        _Entry(dist.name, parts, path)
        for dist in distributions
        for path in dist.files
        if (parts := importable_parts(path)) is not None
    ]
    walk("", entries)
    for dist in distributions:
        if not dist.files:
            roots.update(dist.top_level)
    for clash in _same_path_clashes(site_of, entries, namespace_dirs):
        earlier = clashes.get(clash.name)
        clashes[clash.name] = clash if earlier is None else _merge(earlier, clash)
    return Layout(
        import_roots=sorted(root for root in roots if is_importable_name(root)),
        namespace_packages=sorted(namespaces, key=lambda namespace: namespace.name),
        clashes=sorted(clashes.values(), key=lambda clash: clash.name),
    )


def _module_clash(dotted: str, group: list[_Entry], owners: list[str]) -> Clash:
    def shape(dist: str) -> str:
        files = sorted(e.path for e in group if e.distribution == dist and e.is_module_file())
        return files[0] if files else dotted.replace(".", "/") + "/"

    kind = "two modules" if all(e.is_module_file() for e in group) else "a module and a package"
    described = ", ".join(f"{shape(dist)} ({dist})" for dist in owners)
    candidates = sorted({(e.distribution, e.path) for e in group if e.is_module_file() or e.is_init()})
    return Clash(dotted, owners, f"{kind}: {described}", candidates)


def _same_path_clashes(site_of: Mapping[str, str], entries: Iterable[_Entry], namespace_dirs: set[str]) -> list[Clash]:
    """Paths written by two distributions into the same site directory, grouped by name."""
    writers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for entry in entries:
        writers[(site_of[entry.distribution], entry.path)].add(entry.distribution)
    by_name: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for (_, path), dists in sorted(writers.items()):
        if len(dists) > 1 and not _harmless_shared_path(path, namespace_dirs):
            by_name[_owning_name(path, namespace_dirs)].append((path, sorted(dists)))
    clashes = []
    for name, shared in sorted(by_name.items()):
        paths = [path for path, _ in shared]
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        clashes.append(
            Clash(
                name,
                sorted({dist for _, dists in shared for dist in dists}),
                f"both write {shown}",
                [(dist, path) for path, dists in shared for dist in dists],
            )
        )
    return clashes


def _merge(first: Clash, second: Clash) -> Clash:
    return Clash(
        first.name,
        sorted(set(first.distributions) | set(second.distributions)),
        f"{first.detail}; {second.detail}",
        sorted(set(first.candidates) | set(second.candidates)),
    )


def _harmless_shared_path(path: str, namespace_dirs: set[str]) -> bool:
    """The declaration every pkgutil portion writes, and files without code in a namespace."""
    directory, _, filename = path.rpartition("/")
    return directory.replace("/", ".") in namespace_dirs and module_name(filename) in (None, "__init__")


def _owning_name(path: str, namespace_dirs: set[str]) -> str:
    """The importable name a path belongs to: its first component below any namespace."""
    parts = path.split("/")
    depth = 1
    while depth < len(parts) and ".".join(parts[:depth]) in namespace_dirs:
        depth += 1
    if depth == len(parts):
        return ".".join(parts[:-1] + [module_name(parts[-1]) or parts[-1]])
    return ".".join(parts[:depth])


def own_modules(package: str, relative_paths: Iterable[str], entry_points: Iterable[str]) -> list[str]:
    """Every module of a source package, except `__main__` and the given entry points."""
    skipped = set(entry_points)
    names = set()
    for path in relative_paths:
        parts = path.split("/")
        if not parts[-1].endswith(".py") or any(part in NOT_IMPORTED_DIRS for part in parts):
            continue
        name = parts[-1][: -len(".py")]
        dotted = ".".join([package, *parts[:-1]] + ([] if name == "__init__" else [name]))
        if dotted not in skipped and "__main__" not in dotted.split("."):
            names.add(dotted)
    return sorted(names)


def record_hash(data: bytes) -> str:
    """A file's hash as RECORD writes it: `sha256=` and urlsafe base64 without padding."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def pick_winner(owners: Mapping[str, str | None], actual_hash: str | None) -> tuple[str | None, str]:
    """The distribution whose file Python loaded, among those whose RECORD lists that file.

    `owners` maps each such distribution to the hash its RECORD gives the file;
    when several list it, the file's own hash tells which one wrote it last.
    """
    if not owners:
        return None, "a file none of them lists"
    if len(owners) == 1:
        return next(iter(owners)), ""
    matching = sorted(dist for dist, recorded in owners.items() if recorded == actual_hash)
    if len(matching) == 1:
        return matching[0], "the file's hash is the one its RECORD gives"
    if matching:
        return None, f"identical files from {', '.join(matching)}"
    return None, "the file matches no RECORD's hash: it was changed after installation"
