"""`kill -9` while the provider is still creating the job: after a restart the gateway has that
one job, found by its tag, and a retry of the same call never creates a second provider job."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.e2e.providers import TRAINING
from tests.e2e.test_crash_recovery import ROUTE, TENANT, fake, free_port, start, stop, tagged
from tests.fakes import FakeOpenAI

__all__ = ["fake"]  # the fixture, imported for this module's tests


def _create_received(fake: FakeOpenAI) -> bool:
    """Whether the fake has read a create's whole body (it records a request as its head arrives)."""
    return any(request.json is not None for request in fake.requests_to("POST", r"/fine_tuning/jobs$"))


def test_kill_9_during_a_slow_provider_create_leaves_one_job(fake: FakeOpenAI, tmp_path: Path) -> None:
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
    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": native_file.json()["id"]}
    headers = {**ROUTE, "Idempotency-Key": "kill-9-create"}
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    fake.inject("slow", r"/fine_tuning/jobs$", method="POST", delay=1.5)
    proc = start(tmp_path, config, http_port, grpc_port)

    def create() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the gateway is killed before it answers
            httpx.post(base + "/fine_tuning/jobs", json=body, headers=headers, timeout=30)

    caller = threading.Thread(target=create)
    try:
        caller.start()
        deadline = time.monotonic() + 10
        while not _create_received(fake) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the provider is still working on the create
        proc.wait(timeout=10)
    finally:
        caller.join(timeout=30)
        stop(proc)
    deadline = time.monotonic() + 10
    while not tagged(fake) and time.monotonic() < deadline:  # the slow create lands after the kill
        time.sleep(0.05)
    (gateway_id,) = tagged(fake)

    proc = start(tmp_path, config, http_port, grpc_port)
    try:
        retried = httpx.post(base + "/fine_tuning/jobs", json=body, headers=headers, timeout=30)
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == gateway_id
        listed = httpx.get(base + "/fine_tuning/jobs", headers=TENANT).json()["data"]
        assert [job["id"] for job in listed] == [gateway_id]
    finally:
        stop(proc)
    assert len(fake.jobs) == 1 and tagged(fake) == [gateway_id]  # no second paid job
    assert fake.violations == []
