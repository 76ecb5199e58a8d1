"""`[local] queue` and `[worker]` in the config file, the `tunegate worker` flags over them,
and the errors an operator sees for a configuration that cannot work."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from tunegate.server.cli import load_settings
from tunegate.server.workers import WorkerSettings, detect_memory_mb

PG = "postgresql+asyncpg://tunegate@db.internal/tunegate"


def args(**overrides: object) -> argparse.Namespace:
    base: dict[str, object] = {"config": None, "data_dir": None, "grpc_port": None, "http_port": None}
    base.update(overrides)
    return argparse.Namespace(**base)


def settings_of(tmp_path: Path, document: str, **flags: object):
    config = tmp_path / "tunegate.toml"
    config.write_text(document)
    return load_settings(args(config=str(config), **flags), env={})


def test_inprocess_is_the_default(tmp_path: Path) -> None:
    settings = settings_of(tmp_path, "")
    assert settings.server.local_queue == "inprocess"
    assert settings.worker == WorkerSettings()


def test_queue_and_worker_sections_with_flags_over_them(tmp_path: Path) -> None:
    document = (
        f'[server]\ndatabase_url = "{PG}"\n[local]\nqueue = "procrastinate"\n'
        '[worker]\ndevice = "cuda"\nmemory_mb = 65536\nconcurrency = 2\nstalled_seconds = 60\n'
    )
    settings = settings_of(tmp_path, document, worker_concurrency=3, worker_name="gpu-1")
    assert settings.server.local_queue == "procrastinate"
    assert settings.worker == WorkerSettings(
        device="cuda", memory_mb=65536, concurrency=3, stalled_seconds=60, name="gpu-1"
    )
    capabilities = settings.worker.capabilities()
    assert (capabilities.device, capabilities.memory_mb) == ("cuda", 65536)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('[local]\nqueue = "procrastinate"\n', "needs PostgreSQL"),
        ('[server]\ndatabase_url = "sqlite:///x.db"\n[local]\nqueue = "procrastinate"\n', "needs PostgreSQL"),
        ('[local]\nqueue = "celery"\n', "local queue must be one of inprocess, procrastinate"),
        ("[local]\nworkers = 2\n", "[local] takes queue"),
        ('[worker]\ndevice = "tpu"\n', "device must be 'cpu' or 'cuda'"),
        ("[worker]\nconcurrency = 0\n", "concurrency must be at least 1"),
        ("[worker]\nheartbeat_seconds = 30\nstalled_seconds = 10\n", "stalled_seconds must exceed"),
        ("[worker]\ngpus = 1\n", "unknown key(s) in [worker]: gpus"),
    ],
)
def test_bad_queue_config_stops_with_a_message(tmp_path: Path, document: str, message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        settings_of(tmp_path, document)
    assert message in str(stopped.value)


def test_tunegate_worker_refuses_the_inprocess_queue(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tunegate.server.cli", "worker", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert '[local] queue = "procrastinate"' in done.stderr


def test_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16315412 kB\nMemFree:         1000 kB\n")
    assert detect_memory_mb(meminfo) == 15933
