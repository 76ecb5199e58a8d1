"""Who runs a local job, and where: the `Dispatcher` contract and the in-process dispatcher.

A `LocalProvider` never runs a job itself. It records the job in the shared store and hands
its id to a `Dispatcher`, which eventually calls a `JobRunner` (`validate(job_id)` or
`train(job_id)`) on some machine. Everything a runner needs is in the database and the blob
store, so the dispatcher may be this process (`InProcessDispatcher`, `tunegate run`) or a
queue feeding `tunegate worker` processes elsewhere (helper C's procrastinate dispatcher).

Contracts a dispatcher keeps:

- `submit_validate` / `submit_train` return once the request is durable (or, in process,
  queued); they never wait for the work.
- Submitting a job twice is harmless: the runner is idempotent (a job no longer in the status
  the call expects returns at once; a `running` job whose worker died resumes from its newest
  checkpoint).
- `start()` recovers work a previous process left behind; `aclose()` stops running work so that
  it resumes later (the runner pauses the trainer and leaves the status `running`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_MEMORY_MB",
    "Device",
    "Dispatcher",
    "InProcessDispatcher",
    "JobRunner",
    "Needs",
    "needs_of",
]

logger = logging.getLogger("tunegate.server")

Device = Literal["cpu", "cuda", "any"]
DEFAULT_MEMORY_MB = 1024
"""What a job of the tiny base model is assumed to need when its options say nothing."""


@dataclass(frozen=True, slots=True)
class Needs:
    """What a training job needs from the machine that runs it. `device`: `cpu`, `cuda` or
    `any` (either will do). `memory_mb`: host (or device) memory it is expected to use."""

    device: Device = "any"
    memory_mb: int = DEFAULT_MEMORY_MB

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda", "any"):
            raise ValueError(f"device must be cpu, cuda or any, not {self.device!r}")
        if self.memory_mb < 1:
            raise ValueError("memory_mb must be at least 1")


def needs_of(job: Mapping[str, Any]) -> Needs:
    """The `Needs` of a job object: from `provider_options` (`device`, `memory_mb`) in its
    stored body when present, else the defaults (any device, `DEFAULT_MEMORY_MB`)."""
    options = job.get("provider_options")
    if not isinstance(options, Mapping):
        options = {}
    device = str(options.get("device") or "any")
    try:
        memory_mb = int(options.get("memory_mb") or DEFAULT_MEMORY_MB)
    except (TypeError, ValueError):
        memory_mb = DEFAULT_MEMORY_MB
    kind: Device = "cpu" if device == "cpu" else "cuda" if device == "cuda" else "any"
    return Needs(device=kind, memory_mb=max(1, memory_mb))


@runtime_checkable
class JobRunner(Protocol):
    """One machine's side of a local job (implemented by `_runner.LocalJobRunner`).

    `validate(job_id)`: a `validating_files` job's files are checked; the job becomes `queued`
    (returns True: the caller should submit it for training) or `failed` (returns False).
    Any other status: returns False at once.

    `train(job_id)`: runs a `queued` (or `running`, its previous worker dead) job to its end on
    this machine, resuming from its newest checkpoint blob when there is one. Terminal, paused
    or cancelled jobs return at once. Cancellation of the calling task (shutdown) asks the
    trainer to checkpoint, leaves the status `running` and re-raises `CancelledError`.
    """

    async def validate(self, job_id: str) -> bool: ...

    async def train(self, job_id: str) -> None: ...


class Dispatcher(Protocol):
    """Routes local jobs to a `JobRunner` somewhere (see the module docstring)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def submit_validate(self, job_id: str) -> None: ...

    async def submit_train(self, job_id: str, needs: Needs) -> None: ...


Recover = Callable[[], Awaitable[Iterable[tuple[str, str, Needs]]]]
"""Lists `(job_id, status, needs)` of unfinished jobs (`validating_files`, `queued`, `running`)
in creation order, for recovery at start."""


class InProcessDispatcher:
    """Today's `tunegate run` behaviour: a bounded FIFO of training jobs run by `concurrency`
    tasks of this process; validations run at once (each in its own task).

    `start()` recovers: `validating_files` jobs are validated again, `queued` and `running`
    jobs are trained again (the runner resumes a `running` job from its checkpoint or fails it
    `interrupted`). `aclose()` cancels the tasks; the runner pauses their trainers."""

    def __init__(self, runner: JobRunner, concurrency: int = 1, *, recover: Recover | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._runner = runner
        self._concurrency = concurrency
        self._recover = recover
        self._pending: deque[str] = deque()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    def is_running(self, job_id: str) -> bool:
        """Whether this process is training the job right now."""
        return job_id in self._running

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._recover is not None:
            for job_id, status, needs in await self._recover():
                if status == "validating_files":
                    await self.submit_validate(job_id)
                else:
                    await self.submit_train(job_id, needs)

    async def aclose(self) -> None:
        self._started = False
        self._pending.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def submit_validate(self, job_id: str) -> None:
        self._spawn(self._validate(job_id), f"local-validate-{job_id}")

    async def submit_train(self, job_id: str, needs: Needs) -> None:
        del needs  # one machine: whatever it has is what the job gets
        if job_id in self._running:
            self._again.add(job_id)  # resumed while its trainer still pauses: run it once more after
        elif job_id not in self._pending:
            self._pending.append(job_id)
        self._pump()

    async def _validate(self, job_id: str) -> None:
        if await self._runner.validate(job_id):
            await self.submit_train(job_id, Needs())

    def _pump(self) -> None:
        """Start the oldest pending jobs while slots are free (a task per job, none when idle)."""
        while self._started and self._pending and len(self._running) < self._concurrency:
            job_id = self._pending.popleft()
            self._running.add(job_id)
            self._spawn(self._train(job_id), f"local-train-{job_id}")

    async def _train(self, job_id: str) -> None:
        try:
            await self._runner.train(job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("training local job %s failed", job_id)
        finally:
            self._running.discard(job_id)
            if job_id in self._again and self._started:
                self._again.discard(job_id)
                self._pending.appendleft(job_id)
            self._pump()

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
