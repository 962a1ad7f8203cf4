"""`receive_upload` directly: the streaming byte count holds beyond Content-Length."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from agent_runner.uploads import UploadError, receive_upload

from test_control_api import BOUNDARY, multipart_body


def test_streamed_bytes_are_counted(tmp_path: Path) -> None:
    body = multipart_body([("a.bin", b"y" * 5000)])
    # The caller claims the body fits; counting while streaming still refuses it.
    with pytest.raises(UploadError) as caught:
        receive_upload(
            io.BytesIO(body), f"multipart/form-data; boundary={BOUNDARY}", len(body), tmp_path, 4096
        )
    assert caught.value.status == 413
    assert list(tmp_path.iterdir()) == []


def test_short_body_refused(tmp_path: Path) -> None:
    body = multipart_body([("a.bin", b"z")])
    with pytest.raises(UploadError) as caught:
        receive_upload(
            io.BytesIO(body), f"multipart/form-data; boundary={BOUNDARY}", len(body) + 10, tmp_path, 4096
        )
    assert caught.value.status == 400
    assert list(tmp_path.iterdir()) == []
