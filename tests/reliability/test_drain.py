"""SIGTERM while an upload streams in: the upload is read to its end and answered, the process
exits once it is done (not after the shutdown timeout), and the file is there after a restart."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_crash_recovery import free_port, start, stop

KEY = {"Authorization": "Bearer sk-drain"}
LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
PIECES = 30
PIECE = LINE * 1000


def _slow_form(started: threading.Event) -> Iterator[bytes]:
    yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.jsonl"\r\n\r\n'
    for _ in range(PIECES):
        yield PIECE
        started.set()
        time.sleep(0.1)
    yield b"\r\n--b--\r\n"


def test_sigterm_lets_an_upload_in_flight_finish_then_exits(tmp_path: Path) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text("[server]\n")
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    proc = start(tmp_path, config, http_port, grpc_port)
    answer: dict[str, Any] = {}
    started = threading.Event()

    def upload() -> None:
        answer["response"] = httpx.post(
            base + "/files",
            content=_slow_form(started),
            headers={**KEY, "Content-Type": "multipart/form-data; boundary=b"},
            timeout=60,
        )

    idle = httpx.Client()
    try:
        assert idle.get(base + "/files", headers=KEY).status_code == 200  # a keep-alive connection
        uploader = threading.Thread(target=upload)
        uploader.start()
        assert started.wait(10)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:  # served if it beat the signal; else refused or told to retry — never left hanging
            late = idle.get(base + "/files", headers=KEY, timeout=10)
            assert late.status_code == 200 or (
                late.status_code == 503 and late.headers["x-should-retry"] == "true"
            ), late.text
        except httpx.TransportError:
            pass
        uploader.join(timeout=60)
        response = answer["response"]
        assert response.status_code == 200, response.text
        assert response.json()["bytes"] == PIECES * len(PIECE)
        proc.wait(timeout=30)
        exited_after = time.monotonic() - signalled
    finally:
        idle.close()
        stop(proc)
    # Exited with the last request, not after the 60 s shutdown timeout (a bound on a hang).
    assert proc.returncode == 0 and exited_after < 30

    proc = start(tmp_path, config, http_port, grpc_port)
    try:
        (listed,) = httpx.get(base + "/files", headers=KEY).json()["data"]
        assert listed["id"] == response.json()["id"] and listed["bytes"] == PIECES * len(PIECE)
    finally:
        stop(proc)
