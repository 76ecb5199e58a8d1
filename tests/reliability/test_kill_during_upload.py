"""`kill -9` while an upload streams in: after a restart nothing partial is listed and no blob
or temporary file is left behind; the next upload works."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_crash_recovery import free_port, start, stop

TENANT = {"x-portkey-api-key": "pk-kill-tenant"}
LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
CHUNK = LINE * (64 * 1024 // len(LINE))


def _files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


def _upload_until_killed(base: str, sent: threading.Event, stop_sending: threading.Event) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(4096):  # 256 MiB at most: the process dies long before
            yield CHUNK
            sent.set()
            if stop_sending.wait(0.005):
                return

    with contextlib.suppress(httpx.HTTPError):  # the gateway dies mid-body: what the test is about
        httpx.post(
            base + "/files",
            headers={**TENANT, "Content-Type": "multipart/form-data; boundary=b0undary"},
            content=_form(body()),
            timeout=30,
        )


def _form(chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
    yield b"Content-Type: application/octet-stream\r\n\r\n"
    yield from chunks
    yield b"\r\n--b0undary--\r\n"


@pytest.mark.parametrize("after_mib", [1, 4, 12])
def test_kill_9_mid_upload_leaves_nothing_partial(tmp_path: Path, after_mib: int) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text("[server]\nmax_file_bytes = 536870912\n")
    data = tmp_path / "data"
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    proc = start(tmp_path, config, http_port, grpc_port)
    sent, stop_sending = threading.Event(), threading.Event()
    uploader = threading.Thread(target=_upload_until_killed, args=(base, sent, stop_sending))
    try:
        uploader.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the blob being written has grown
            staged = sum(p.stat().st_size for p in _files_under(data / "tmp"))
            if staged >= after_mib * 1024 * 1024:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the upload never reached the blob store")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop_sending.set()
        uploader.join(timeout=30)
        stop(proc)
    assert _files_under(data / "tmp"), "the kill came before anything was staged"

    proc = start(tmp_path, config, http_port, grpc_port)
    try:
        listed = httpx.get(base + "/files", headers=TENANT).json()["data"]
        assert listed == []
        assert _files_under(data / "tmp") == []  # swept at start-up
        assert _files_under(data / "blobs") == []  # no blob without its record
        again = httpx.post(
            base + "/files",
            headers=TENANT,
            data={"purpose": "fine-tune"},
            files={"file": ("d.jsonl", LINE * 20)},
        )
        assert again.status_code == 200, again.text
        (only,) = httpx.get(base + "/files", headers=TENANT).json()["data"]
        assert only["id"] == again.json()["id"] and only["bytes"] == len(LINE) * 20
    finally:
        stop(proc)
