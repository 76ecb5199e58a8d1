"""The `local` provider: real fine-tuning on this machine (PyTorch in worker processes).

The gateway side (`LocalProvider`, its scheduler and job state) imports no torch; the trainer
core (`_model`, `_data`, `_train`, `_inference`, `worker`) runs in the worker processes and,
for chat completions, in the server's inference threads.
"""

from __future__ import annotations

from tunegate.server.providers.local._provider import BASE_MODEL, LocalProvider, LocalSettings
from tunegate.server.providers.local._scheduler import SchedulerSettings

__all__ = ["BASE_MODEL", "LocalProvider", "LocalSettings", "SchedulerSettings"]
