"""Kill the server between the provider's create and the commit: after a restart the job is
there, exactly once — the gateway never loses or doubles a paid job."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.providers import TRAINING
from tests.fakes import FakeOpenAI, start_fake_openai_in_thread

TENANT = {"x-portkey-api-key": "pk-crash-tenant"}
ROUTE = {**TENANT, "x-portkey-virtual-key": "team"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    upstream = start_fake_openai_in_thread(steps_per_get=0)
    yield upstream
    upstream.close()


def start(tmp_path: Path, config: Path, http_port: int, grpc_port: int, **env: str) -> subprocess.Popen[str]:
    tunegate = Path(sys.executable).parent / "tunegate"
    proc = subprocess.Popen(
        [
            str(tunegate),
            "run",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        env={**os.environ, "TG_CRASH_VK": "sk-crash-test", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("gateway did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def tagged(fake: FakeOpenAI) -> list[str]:
    return [
        j.metadata["tunegate_job_id"]
        for j in fake.jobs.values()
        if j.metadata and "tunegate_job_id" in j.metadata
    ]


def test_crash_between_provider_create_and_commit(fake: FakeOpenAI, tmp_path: Path) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text(
        f'[server]\nreconcile_grace_seconds = 0.0\n\n[providers.openai]\nbase_url = "{fake.base_url}"\n\n'
        '[virtual_keys.team]\nprovider = "openai"\napi_key_env = "TG_CRASH_VK"\n'
    )
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    proc = start(tmp_path, config, http_port, grpc_port, TUNEGATE_FAULT_CRASH_AFTER_PROVIDER_CREATE="1")
    try:
        uploaded = httpx.post(
            base + "/files",
            headers=TENANT,
            data={"purpose": "fine-tune"},
            files={"file": ("d.jsonl", TRAINING)},
        )
        assert uploaded.status_code == 200, uploaded.text
        body = {"model": "gpt-4o-mini-2024-07-18", "training_file": uploaded.json()["id"]}
        headers = {**ROUTE, "Idempotency-Key": "crash-once"}
        with pytest.raises(httpx.HTTPError):
            response = httpx.post(base + "/fine_tuning/jobs", json=body, headers=headers, timeout=30)
            raise AssertionError(
                f"the gateway answered instead of crashing: {response.status_code} {response.text}"
            )
        assert proc.wait(timeout=30) == 70  # died right after the provider created the job
    finally:
        stop(proc)
    assert len(tagged(fake)) == 1  # the provider has the paid job; the gateway never committed it
    (gateway_id,) = tagged(fake)
    (native,) = fake.jobs.values()
    fake.advance(native.id, to="running")  # so a reconciled record is told apart from the intent

    proc = start(tmp_path, config, http_port, grpc_port)
    try:
        deadline = time.monotonic() + 20
        while True:  # the start-up reconciler completes the record in the background
            listed = httpx.get(base + "/fine_tuning/jobs", headers=TENANT).json()["data"]
            if (listed and listed[0]["status"] != "validating_files") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [(job["id"], job["status"]) for job in listed] == [(gateway_id, "running")]
        retried = httpx.post(base + "/fine_tuning/jobs", json=body, headers=headers, timeout=30)
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == gateway_id
        fetched = httpx.get(base + f"/fine_tuning/jobs/{gateway_id}", headers=TENANT)
        assert fetched.status_code == 200 and fetched.json()["training_file"] == body["training_file"]
    finally:
        stop(proc)
    assert len(fake.jobs) == 1 and tagged(fake) == [gateway_id]
    assert fake.violations == []


def test_crash_after_an_unkeyed_create(fake: FakeOpenAI, tmp_path: Path) -> None:
    """Without an idempotency key and with a provider-native file (nothing to copy), the intent
    is committed, attempted, before the provider is called; the crash comes before the completion."""
    config = tmp_path / "tunegate.toml"
    config.write_text(
        f'[server]\nreconcile_grace_seconds = 0.0\n\n[providers.openai]\nbase_url = "{fake.base_url}"\n\n'
        '[virtual_keys.team]\nprovider = "openai"\napi_key_env = "TG_CRASH_VK"\n'
    )
    native_file = httpx.post(
        fake.base_url + "/files",
        headers={"Authorization": "Bearer sk-crash-test"},
        data={"purpose": "fine-tune"},
        files={"file": ("d.jsonl", TRAINING)},
    )
    assert native_file.status_code == 200, native_file.text
    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": native_file.json()["id"]}
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    proc = start(tmp_path, config, http_port, grpc_port, TUNEGATE_FAULT_CRASH_AFTER_PROVIDER_CREATE="1")
    try:
        with pytest.raises(httpx.HTTPError):
            response = httpx.post(base + "/fine_tuning/jobs", json=body, headers=ROUTE, timeout=30)
            raise AssertionError(f"the gateway answered instead of crashing: {response.status_code}")
        assert proc.wait(timeout=30) == 70
    finally:
        stop(proc)
    (gateway_id,) = tagged(fake)
    with sqlite3.connect(tmp_path / "data" / "tunegate.db") as conn:
        rows = conn.execute("SELECT id, state, attempted FROM jobs").fetchall()
    assert rows == [(gateway_id, "intent", 1)]
    (native,) = fake.jobs.values()
    fake.advance(native.id, to="running")

    proc = start(tmp_path, config, http_port, grpc_port)
    try:
        deadline = time.monotonic() + 20
        while True:
            listed = httpx.get(base + "/fine_tuning/jobs", headers=TENANT).json()["data"]
            if (listed and listed[0]["status"] != "validating_files") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [(job["id"], job["status"]) for job in listed] == [(gateway_id, "running")]
        fetched = httpx.get(base + f"/fine_tuning/jobs/{gateway_id}", headers=TENANT)
        assert fetched.status_code == 200 and fetched.json()["fine_tuned_model"] is None
    finally:
        stop(proc)
    assert len(fake.jobs) == 1 and tagged(fake) == [gateway_id]
    assert fake.violations == []
