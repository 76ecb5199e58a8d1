"""A canary secret sent on failing and succeeding calls to a live `tunegate run` logging at DEBUG
— provider credentials, a gateway key, a stored virtual key's secret — is found nowhere: not in
its log output, not in any file of its data directory (SQLite included)."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_cli import free_port


def raw_request(port: int, head: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(10)
        while sock.recv(65536):
            pass


def test_canary_secret_is_never_logged_or_stored(tmp_path: Path) -> None:
    canary = "sk-CANARY-" + secrets.token_hex(8)
    tenant = "pk-CANARY-" + secrets.token_hex(8)
    vk_secret = "vk" + "CANARY" + secrets.token_hex(12)  # no sk-/pk- prefix: not masked by its shape
    data_dir = tmp_path / "d"
    http_port, grpc_port = free_port(), free_port()
    tunegate = Path(sys.executable).parent / "tunegate"
    command = [str(tunegate), "run", "--data-dir", str(data_dir), "--log-level", "debug"]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {canary}", "x-portkey-api-key": tenant}
        # bad header bytes: aiohttp's parser refuses the request
        raw_request(
            http_port,
            f"GET /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {canary}\x01\r\n\r\n".encode(),
        )
        raw_request(
            http_port,
            f"GET /v1/files HTTP/1.1\r\nHost: x\r\nx-portkey-api-key: {tenant}\x7f\r\n\r\n".encode(),
        )
        # a refused route, an unknown file, a successful list and upload
        # a refused route (status owned by the routing tests), an unknown file, a list, an upload
        files = {"file": ("t.jsonl", b'{"a": 1}\n')}
        headers = {**auth, "x-portkey-provider": "openai", "x-portkey-custom-host": "http://127.0.0.1:1"}
        httpx.post(base + "/v1/files", headers=headers, data={"purpose": "batch"}, files=files, timeout=30)
        assert httpx.get(base + "/v1/files/file-unknown", headers=auth, timeout=30).status_code == 404
        assert httpx.get(base + "/v1/files", headers=auth, timeout=30).status_code == 200
        files = {"file": ("t.jsonl", b'{"a": 1}\n')}
        assert (
            httpx.post(
                base + "/v1/files", headers=auth, data={"purpose": "batch"}, files=files, timeout=30
            ).status_code
            == 200
        )
        # A stored virtual key's secret: created, refused, and used on a call that fails upstream.
        vk = {"slug": "canary", "provider": "openai", "key": vk_secret}
        assert httpx.post(base + "/v1/virtual-keys", headers=auth, json=vk, timeout=30).status_code == 200
        refused = {**vk, "slug": "bad", "options": {"custom_host": "http://10.0.0.1"}}
        assert (
            httpx.post(base + "/v1/virtual-keys", headers=auth, json=refused, timeout=30).status_code == 400
        )
        job = {
            "model": "gpt-4o-mini",
            "training_file": "file-x",
            "portkey_options": {"virtual_key": "canary"},
        }
        httpx.post(base + "/v1/fine_tuning/jobs", headers=auth, json=job, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert output, "nothing was logged"
    canaries = (canary, tenant, vk_secret)
    hits = [secret for secret in canaries if secret.encode() in output]
    for path in data_dir.rglob("*"):
        if path.is_file():
            hits += [f"{secret} in {path}" for secret in canaries if secret.encode() in path.read_bytes()]
    assert hits == [], output.decode(errors="replace")[-3000:]
