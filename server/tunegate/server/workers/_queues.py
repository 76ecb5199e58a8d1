"""Queue names: which queue a job goes to from its needs, which queues a worker listens to
from its capabilities.

Training queues are `local-<device>-<tier>g`: the device (`cpu`, or `cuda` for a job that
needs a GPU) and a memory tier, the smallest of `MEMORY_TIERS_GIB` that holds the job's
`memory_mb`. A worker listens to the tiers its memory holds in full (the smallest always) —
CPU queues on every worker, CUDA queues on CUDA workers — so a job is only taken by a worker
that fits it. Validation (light, any machine) has its own queue, and so does upkeep.
"""

from __future__ import annotations

from tunegate.server.providers.local._dispatch import Needs
from tunegate.server.workers._settings import Capabilities

__all__ = [
    "MAINTENANCE_QUEUE",
    "MEMORY_TIERS_GIB",
    "VALIDATE_QUEUE",
    "light_queues",
    "train_queue",
    "train_queues",
]

VALIDATE_QUEUE = "local-validate"
MAINTENANCE_QUEUE = "tunegate-maintenance"
MEMORY_TIERS_GIB = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_MIB_PER_GIB = 1024


def _tier(memory_mb: int) -> int:
    for tier in MEMORY_TIERS_GIB:
        if memory_mb <= tier * _MIB_PER_GIB:
            return tier
    raise ValueError(f"a job needing {memory_mb} MiB exceeds the largest worker tier")


def train_queue(needs: Needs) -> str:
    """The queue a training job with these needs waits in (`any` device waits for a CPU)."""
    device = "cuda" if needs.device == "cuda" else "cpu"
    return f"local-{device}-{_tier(max(needs.memory_mb, 0))}g"


def train_queues(capabilities: Capabilities) -> list[str]:
    """Every training queue a worker with these capabilities can serve."""
    tiers = [t for t in MEMORY_TIERS_GIB if t * _MIB_PER_GIB <= capabilities.memory_mb]
    tiers = tiers or [MEMORY_TIERS_GIB[0]]
    devices = ("cpu", "cuda") if capabilities.device == "cuda" else ("cpu",)
    return [f"local-{device}-{tier}g" for device in devices for tier in tiers]


def light_queues() -> list[str]:
    """Validation and upkeep: short tasks every worker serves beside its training slots."""
    return [VALIDATE_QUEUE, MAINTENANCE_QUEUE]
