"""The `local` provider: real fine-tuning on this machine (PyTorch in worker processes).

The gateway side (`LocalProvider`, its dispatcher, runner and store) imports no torch; the trainer
core (`_model`, `_data`, `_train`, `_inference`, `worker`) runs in the worker processes and,
for chat completions, in the server's inference threads.
"""

from __future__ import annotations

from tunegate.server.providers.local._dispatch import (
    Dispatcher,
    InProcessDispatcher,
    JobRunner,
    Needs,
    needs_of,
)
from tunegate.server.providers.local._provider import (
    BASE_MODEL,
    LocalProvider,
    LocalSettings,
    SchedulerSettings,
)
from tunegate.server.providers.local._runner import LocalJobRunner, RunnerSettings

__all__ = [
    "BASE_MODEL",
    "Dispatcher",
    "InProcessDispatcher",
    "JobRunner",
    "LocalJobRunner",
    "LocalProvider",
    "LocalSettings",
    "Needs",
    "RunnerSettings",
    "SchedulerSettings",
    "needs_of",
]
