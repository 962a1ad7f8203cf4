"""Control API over real HTTP on a socket it is handed: the health body, multipart uploads."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from agent_runner.control_api import ControlServer

from conftest import MAX_UPLOAD_BYTES, wait_until

BOUNDARY = "testboundary7MA4YWxkTrZu0gW"


def multipart_body(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> bytes:
    chunks = []
    for name, value in (fields or {}).items():
        chunks.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for filename, content in files:
        chunks.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def request(
    server: ControlServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def upload(server: ControlServer, body: bytes, content_type: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}"}
    return request(server, "POST", "/v1/uploads", body, headers)


def workspace_files(server: ControlServer) -> list[str]:
    root: Path = server.settings.workspace_root
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_healthz_answers_the_health_body_and_closes(control_server: ControlServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", control_server.server_address[1], timeout=5)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read()) == {"status": "ok", "from": "test"}
    # No keep-alive: after a reload, a reused connection would reach the old runner.
    assert response.getheader("Connection") == "close"
    connection.close()


def test_an_upload_in_flight_at_shutdown_finishes(control_server: ControlServer) -> None:
    body = multipart_body([("late.txt", b"made it")])
    connection = socket.create_connection(("127.0.0.1", control_server.server_address[1]), timeout=5)
    head = (
        "POST /v1/uploads HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body[:10])
    wait_until(lambda: control_server._active_requests == 1, 5, what="the request to start")
    control_server.shutdown()  # the runner stops accepting...
    connection.sendall(body[10:])  # ...and the upload still completes
    reply = connection.makefile("rb").read()
    connection.close()
    assert reply.startswith(b"HTTP/1.1 201")
    assert control_server.wait_for_requests(5)
    assert (control_server.settings.workspace_root / "late.txt").read_bytes() == b"made it"


def test_unknown_routes_are_404(control_server: ControlServer) -> None:
    status, body = request(control_server, "GET", "/nope")
    assert status == 404
    assert body == {"error": "no route for GET /nope"}


def test_upload_stores_files(control_server: ControlServer) -> None:
    body = multipart_body([("dir/a.txt", b"hello\n"), ("b.bin", bytes(range(256)))], {"note": "x"})
    status, reply = upload(control_server, body)
    assert status == 201
    assert reply == {"stored": [{"path": "dir/a.txt", "bytes": 6}, {"path": "b.bin", "bytes": 256}]}
    root = control_server.settings.workspace_root
    assert (root / "dir/a.txt").read_bytes() == b"hello\n"
    assert (root / "b.bin").read_bytes() == bytes(range(256))
    assert workspace_files(control_server) == ["b.bin", "dir", "dir/a.txt"]


def test_traversal_refused_and_nothing_left(control_server: ControlServer) -> None:
    for bad in ("../escape.txt", "/etc/passwd", "dir/../../x", "./a", "a//b"):
        body = multipart_body([("ok.txt", b"fine"), (bad, b"evil")])
        status, reply = upload(control_server, body)
        assert status == 400, bad
        assert "error" in reply
    assert workspace_files(control_server) == []
    assert not (control_server.settings.workspace_root.parent / "escape.txt").exists()


def test_symlink_out_of_workspace_refused(control_server: ControlServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (control_server.settings.workspace_root / "link").symlink_to(outside)
    status, _ = upload(control_server, multipart_body([("link/x.txt", b"evil")]))
    assert status == 400
    assert list(outside.iterdir()) == []


def test_oversize_by_content_length_refused(control_server: ControlServer) -> None:
    body = multipart_body([("big.bin", b"x" * (MAX_UPLOAD_BYTES + 1))])
    status, reply = upload(control_server, body)
    assert status == 413
    assert "exceeds" in reply["error"]
    assert workspace_files(control_server) == []


def test_malformed_body_refused(control_server: ControlServer) -> None:
    truncated = multipart_body([("a.txt", b"data")])[:-20]
    status, reply = upload(control_server, truncated)
    assert status == 400
    assert "malformed" in reply["error"]
    status, _ = upload(control_server, b"garbage without boundaries")
    assert status == 400
    assert workspace_files(control_server) == []


def test_wrong_content_type_refused(control_server: ControlServer) -> None:
    status, reply = upload(control_server, b"{}", content_type="application/json")
    assert status == 400
    assert "multipart/form-data" in reply["error"]


def test_no_file_parts_refused(control_server: ControlServer) -> None:
    status, reply = upload(control_server, multipart_body([], {"only": "field"}))
    assert status == 400
    assert "no file parts" in reply["error"]


def test_a_client_that_leaves_before_its_answer_is_not_a_traceback(
    control_server: ControlServer, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        control_server.handle_error(None, ("127.0.0.1", 1))
    assert "Traceback" not in capsys.readouterr().err
