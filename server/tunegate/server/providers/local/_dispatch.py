"""Stand-in for helper B's `Dispatcher` contract (docs/scaleout: `providers/local/_dispatch.py`),
kept to the shared plan's signatures so the queue dispatcher can be built and tested before the
`local-shared` branch lands; B's module replaces this file at merge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Device", "Dispatcher", "Needs"]

Device = Literal["cpu", "cuda", "any"]


@dataclass(frozen=True, slots=True)
class Needs:
    """What a training job needs from the machine that runs it."""

    device: Device = "any"
    memory_mb: int = 0


class Dispatcher(Protocol):
    """Hands a job's validation and training to whoever runs them."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def submit_validate(self, job_id: str) -> None: ...

    async def submit_train(self, job_id: str, needs: Needs) -> None: ...
