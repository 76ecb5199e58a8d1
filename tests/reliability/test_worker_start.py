"""A local training job, run by a real `tunegate run` (uvloop, workers as subprocesses), starts its
worker without gRPC's fork() warning in the server's output."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx

from tests.e2e.test_crash_recovery import free_port, start

KEY = {"Authorization": "Bearer sk-worker-start"}


def test_a_local_job_starts_its_worker_without_grpcs_fork_warning(tmp_path: Path) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text("[server]\n")
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    lines = (
        json.dumps(
            {"messages": [{"role": "user", "content": f"word {i}"}, {"role": "assistant", "content": "abc"}]}
        )
        for i in range(12)
    )
    proc = start(tmp_path, config, http_port, grpc_port)
    try:
        uploaded = httpx.post(
            base + "/files",
            headers=KEY,
            data={"purpose": "fine-tune"},
            files={"file": ("train.jsonl", "\n".join(lines).encode())},
        )
        assert uploaded.status_code == 200, uploaded.text
        job = httpx.post(
            base + "/fine_tuning/jobs",
            headers=KEY,
            json={"model": "tunegate-tiny", "training_file": uploaded.json()["id"], "seed": 1},
            timeout=30,
        ).json()
        deadline = time.monotonic() + 120
        while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = httpx.get(base + f"/fine_tuning/jobs/{job['id']}", headers=KEY).json()
        assert job["status"] == "succeeded", job
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert "fork" not in output, output
