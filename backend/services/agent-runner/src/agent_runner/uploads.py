"""Multipart uploads into the workspace: path validation, streaming parse, atomic store.

The body is parsed with python-multipart's streaming `MultipartParser`, imported
here, on the request path, so every upload exercises the import that broke the
original PyInstaller build. File parts are written to a staging directory inside
the workspace and renamed into place only once the whole body parsed, so a
refused upload leaves nothing behind (a rename within one file system is atomic).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

READ_CHUNK_BYTES = 64 * 1024
STAGING_PREFIX = ".upload-"


class UploadError(Exception):
    """An upload refused with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class StoredFile:
    path: str
    bytes: int


def safe_relative_path(workspace_root: Path, filename: str) -> PurePosixPath:
    """Return `filename` as a relative path that stays inside the workspace, or raise."""
    if not filename or "\x00" in filename or "\\" in filename:
        raise UploadError(400, f"invalid file name {filename!r}")
    relative = PurePosixPath(filename)
    if relative.is_absolute():
        raise UploadError(400, f"absolute path {filename!r} refused")
    # Checked on the raw segments: PurePosixPath drops "." and empty segments.
    if any(segment in ("", ".", "..") for segment in filename.split("/")):
        raise UploadError(400, f"path {filename!r} must not contain '.', '..' or empty segments")
    # Resolving catches a symlink inside the workspace that points outside of it.
    root = workspace_root.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or target == root:
        raise UploadError(400, f"path {filename!r} resolves outside the workspace")
    return relative


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    filename: PurePosixPath | None = None
    staged: BinaryIO | None = None
    staged_path: Path | None = None
    size: int = 0


class _UploadSession:
    """Receives parser callbacks and stages each file part in its own temp file."""

    def __init__(self, workspace_root: Path, staging_dir: Path) -> None:
        self.workspace_root = workspace_root
        self.staging_dir = staging_dir
        self.finished: list[tuple[PurePosixPath, Path, int]] = []
        self.ended = False
        self._part = _Part()
        self._header_field = b""
        self._header_value = b""
        self._error: UploadError | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def raise_pending(self) -> None:
        # Exceptions raised inside parser callbacks are kept and re-raised here so
        # the parser's own error handling never wraps or swallows them.
        if self._error is not None:
            raise self._error

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self._part.headers.get(b"content-disposition", b""))
        raw_name = params.get(b"filename")
        if raw_name is None:
            return  # a plain form field, not a file: nothing to store
        try:
            self._part.filename = safe_relative_path(
                self.workspace_root, raw_name.decode("utf-8", errors="strict")
            )
        except UnicodeDecodeError:
            self._error = UploadError(400, "file name is not valid UTF-8")
        except UploadError as error:
            self._error = self._error or error
        if self._part.filename is not None:
            fd, staged_path = tempfile.mkstemp(dir=self.staging_dir)
            self._part.staged = os.fdopen(fd, "wb")
            self._part.staged_path = Path(staged_path)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.staged is not None:
            self._part.staged.write(data[start:end])
            self._part.size += end - start

    def _on_part_end(self) -> None:
        part = self._part
        if part.staged is not None and part.staged_path is not None and part.filename is not None:
            part.staged.close()
            self.finished.append((part.filename, part.staged_path, part.size))

    def _on_end(self) -> None:
        self.ended = True

    def close_open_part(self) -> None:
        if self._part.staged is not None and not self._part.staged.closed:
            self._part.staged.close()


def boundary_from_content_type(content_type: str | None) -> bytes:
    from python_multipart.multipart import parse_options_header

    media_type, params = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        raise UploadError(400, "Content-Type must be multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary")
    return boundary


def receive_upload(
    body: BinaryIO,
    content_type: str | None,
    content_length: int,
    workspace_root: Path,
    max_bytes: int,
) -> list[StoredFile]:
    """Stream a multipart body of `content_length` bytes into `workspace_root`."""
    from python_multipart import MultipartParser
    from python_multipart.exceptions import MultipartParseError

    if content_length > max_bytes:
        raise UploadError(413, f"body of {content_length} bytes exceeds the limit of {max_bytes}")
    boundary = boundary_from_content_type(content_type)
    workspace_root.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=workspace_root))
    session = _UploadSession(workspace_root, staging_dir)
    try:
        parser = MultipartParser(boundary, session.callbacks(), max_size=max_bytes)
        remaining = content_length
        received = 0
        while remaining > 0:
            chunk = body.read(min(READ_CHUNK_BYTES, remaining))
            if not chunk:
                raise UploadError(400, "body ended before Content-Length bytes arrived")
            remaining -= len(chunk)
            # Counted again while streaming: the limit holds even if a caller passes
            # a stream longer than the declared length.
            received += len(chunk)
            if received > max_bytes:
                raise UploadError(413, f"body exceeds the limit of {max_bytes} bytes")
            try:
                parser.write(chunk)
            except MultipartParseError as error:
                raise UploadError(400, f"malformed multipart body: {error}") from None
            session.raise_pending()
        parser.finalize()
        session.raise_pending()
        if not session.ended:
            raise UploadError(400, "malformed multipart body: closing boundary missing")
        if not session.finished:
            raise UploadError(400, "no file parts in the upload")
        return _commit(session.finished, workspace_root)
    finally:
        session.close_open_part()
        shutil.rmtree(staging_dir, ignore_errors=True)


def _commit(
    staged: list[tuple[PurePosixPath, Path, int]], workspace_root: Path
) -> list[StoredFile]:
    stored = []
    for relative, staged_path, size in staged:
        target = workspace_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates 0600 files; the host user reads these through the mount.
        staged_path.chmod(0o644)
        os.replace(staged_path, target)
        stored.append(StoredFile(path=relative.as_posix(), bytes=size))
    return stored
