"""What a training worker is (`[worker]` in the config file) and what it can run, detected from
the machine when the configuration does not say."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Capabilities", "WorkerSettings", "detect_device", "detect_memory_mb"]

WorkerDevice = Literal["cpu", "cuda"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one worker offers: its device and the memory (MiB) a job may use on it."""

    device: WorkerDevice
    memory_mb: int


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """`[worker]`: one `tunegate worker` process (or `tunegate run`'s embedded worker).

    `device` (`cpu` or `cuda`) and `memory_mb` default to what the machine has (`detect_device`,
    `detect_memory_mb`). `concurrency`: training jobs run at once. `heartbeat_seconds`: how
    often the worker proves it is alive; `stalled_seconds`: after that long without a heartbeat
    a worker counts as dead and its jobs are queued again (checked every `stalled_check_seconds`
    by whichever worker is alive). `name` shows in the queue's tables and the logs.
    Raises `ValueError` on an invalid value.
    """

    device: WorkerDevice | None = None
    memory_mb: int | None = None
    concurrency: int = 1
    heartbeat_seconds: float = 10.0
    stalled_seconds: float = 30.0
    stalled_check_seconds: int = 10
    name: str | None = None

    def __post_init__(self) -> None:
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"[worker] device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.memory_mb is not None and self.memory_mb <= 0:
            raise ValueError("[worker] memory_mb must be positive")
        if self.concurrency < 1:
            raise ValueError("[worker] concurrency must be at least 1")
        if not self.heartbeat_seconds > 0:
            raise ValueError("[worker] heartbeat_seconds must be positive")
        if not self.stalled_seconds > self.heartbeat_seconds:
            raise ValueError("[worker] stalled_seconds must exceed heartbeat_seconds")
        if not 1 <= self.stalled_check_seconds <= 59:
            raise ValueError("[worker] stalled_check_seconds must be 1-59")

    def worker_name(self) -> str:
        """`name`, else `<host>:<pid>`."""
        return self.name or f"{socket.gethostname()}:{os.getpid()}"

    def capabilities(self) -> Capabilities:
        """The configured device and memory, each detected when not configured."""
        device = self.device or detect_device()
        memory = self.memory_mb if self.memory_mb is not None else detect_memory_mb()
        return Capabilities(device=device, memory_mb=memory)


def detect_device() -> WorkerDevice:
    """`cuda` when PyTorch is installed and sees a GPU, else `cpu`."""
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def detect_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """The machine's total memory in MiB (`MemTotal`), or from `sysconf` off Linux."""
    with contextlib.suppress(OSError):
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024  # the kernel reports kB
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
