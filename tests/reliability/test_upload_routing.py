"""An upload whose call names a provider it cannot reach is refused with a 400 naming the header
before anything is stored — not stored, answered 200 and logged as an error afterwards — and
before its body is read: a client waiting for `100 Continue` never gets one."""

from __future__ import annotations

import json
import logging
import re
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Gateway

REFUSED = [
    (
        {"x-portkey-provider": "openai", "x-portkey-custom-host": "http://evil.example:9/v1"},
        "x-portkey-custom-host",
    ),
    ({"x-portkey-provider": "nope"}, "x-portkey-provider"),
    ({"x-portkey-provider": "azure-openai"}, "x-portkey-azure-resource-name"),
]


def _blobs(gateway: Gateway) -> set[str]:
    return {str(path) for path in (gateway.data_dir / "blobs").rglob("*") if path.is_file()}


@pytest.mark.parametrize(("route", "param"), REFUSED)
def test_an_upload_with_a_route_that_does_not_resolve_is_refused_first(
    gateway: Gateway, api_key: str, route: dict[str, str], param: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    blobs_before = _blobs(gateway)
    answer = httpx.post(
        gateway.base_url + "/files",
        headers={"Authorization": f"Bearer {api_key}", **route},
        data={"purpose": "fine-tune"},
        files={"file": ("train.jsonl", b'{"messages": []}\n' * 1000)},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    listed = httpx.get(gateway.base_url + "/files", headers={"Authorization": f"Bearer {api_key}"})
    assert listed.json()["data"] == []
    assert _blobs(gateway) == blobs_before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _head(gateway: Gateway, api_key: str, length: int, *extra: str) -> bytes:
    url = urlsplit(gateway.base_url)
    lines = [
        f"POST {url.path}/files HTTP/1.1",
        f"Host: {url.hostname}:{url.port}",
        f"Authorization: Bearer {api_key}",
        "x-portkey-provider: openai",
        "x-portkey-custom-host: http://evil.example:9/v1",
        "Content-Type: multipart/form-data; boundary=b",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """Reads one answer (head and Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


BIG = 64 * 1024 * 1024  # what the old path read and discarded before it answered


def test_a_refused_upload_that_waits_for_100_continue_gets_its_400_and_never_a_100(
    gateway: Gateway, api_key: str
) -> None:
    url = urlsplit(gateway.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(_head(gateway, api_key, BIG, "Expect: 100-continue"))
        head, body = _answer(sock)  # no body byte sent: the answer comes without it
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert json.loads(body)["error"]["param"] == "x-portkey-custom-host"
        assert _closed(sock)  # the client need not send the body it was about to


def test_a_refused_upload_is_answered_before_its_body_arrives(gateway: Gateway, api_key: str) -> None:
    before = _blobs(gateway)  # the session's gateway holds other tests' files
    url = urlsplit(gateway.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        start = b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
        sock.sendall(_head(gateway, api_key, BIG) + start + b"x" * 65536)  # 64 KiB of 64 MiB
        head, body = _answer(sock)
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert json.loads(body)["error"]["param"] == "x-portkey-custom-host"
    assert _blobs(gateway) == before
