"""A crash between a staging provider's create and the gateway's commit, then the reconcile: the
same scenario for every provider whose creates run in the background (Bedrock, Vertex AI,
Fireworks)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.bedrock import wait_for
from tests.e2e.test_crash_recovery import free_port, start, stop


def crash_after_create_then_reconcile(
    tmp_path: Path,
    config_toml: str,
    *,
    env: Mapping[str, str],
    headers: Mapping[str, str],
    model: str,
    training: bytes,
    reconciled_status: str,
    jobs_at_provider: Callable[[str], int],
) -> dict[str, Any]:
    """Starts `tunegate run` with `config_toml`, uploads `training`, creates a job on `model` and
    lets the process die right after the provider's answer (exit 70, before the commit); restarts
    it and waits for the reconciler to show the job in `reconciled_status` under its gateway id.
    `jobs_at_provider(gateway id)` counts the provider's jobs that carry the id: one after the
    crash, still one after the reconcile. Returns the reconciled job."""
    config = tmp_path / "tunegate.toml"
    config.write_text(config_toml)
    http_port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}/v1"
    proc = start(
        tmp_path, config, http_port, grpc_port, TUNEGATE_FAULT_CRASH_AFTER_PROVIDER_CREATE="1", **env
    )
    try:
        file_id = httpx.post(
            f"{base}/files",
            headers=dict(headers),
            files={"file": ("t.jsonl", training)},
            data={"purpose": "fine-tune"},
            timeout=30,
        ).json()["id"]
        created = httpx.post(
            f"{base}/fine_tuning/jobs",
            headers=dict(headers),
            json={"model": model, "training_file": file_id},
            timeout=30,
        ).json()
        assert created["status"] == "validating_files"
        assert proc.wait(timeout=60) == 70  # died right after the provider answered
    finally:
        stop(proc)
    assert jobs_at_provider(created["id"]) == 1
    proc = start(tmp_path, config, http_port, grpc_port, **env)
    try:
        job: dict[str, Any] = wait_for(
            lambda: (
                (
                    j := httpx.get(
                        f"{base}/fine_tuning/jobs/{created['id']}", headers=dict(headers), timeout=10
                    ).json()
                )["status"]
                == reconciled_status
                and j
            ),
            what="the reconciler to find the job",
        )
        assert job["id"] == created["id"]
    finally:
        stop(proc)
    assert jobs_at_provider(created["id"]) == 1
    return job
