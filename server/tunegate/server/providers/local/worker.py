"""The training worker process: `python -m tunegate.server.providers.local.worker <job_dir>`.

Reads `<job_dir>/spec.json` (a `TrainSpec`), validates and trains (`_train.run`), and always ends
by writing `<job_dir>/outcome.json` atomically. Exit code 0 whenever an outcome was reached
(succeeded, paused, cancelled, or failed on bad data/model); 1 on a crash (an `outcome.json`
with status `failed` and code `server_error` is still written when possible); 2 on bad usage.

SIGTERM is a cancel request, honoured between steps. Torch threads: `TUNEGATE_TRAIN_THREADS`,
else half the CPUs. Device: `TUNEGATE_TRAIN_DEVICE` (`cpu`, `cuda`, ...), else CUDA when present.
The process dies with its parent (Linux: `PR_SET_PDEATHSIG`): a training worker that is killed
(SIGKILL, OOM) takes its trainer along, instead of leaving it training for nobody while another
worker resumes the job. This module imports only the trainer (not the gateway) — though
`python -m` still runs the parent packages' `__init__` modules.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from pathlib import Path

__all__ = ["main"]


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tunegate.server.providers.local.worker <job_dir>", file=sys.stderr)
        return 2
    job_dir = Path(args[0])
    from tunegate.server.providers.local._artifacts import Artifacts

    files = Artifacts(job_dir)
    try:
        import torch
        from tunegate.server.providers.local._train import Control, TrainSpec, run

        threads = int(os.environ.get("TUNEGATE_TRAIN_THREADS") or max(1, (os.cpu_count() or 2) // 2))
        torch.set_num_threads(threads)
        spec = TrainSpec.from_json(files.spec.read_text(encoding="utf-8"))
        control = Control(job_dir)
        control.install_signal_handler()
        outcome = run(spec, control=control, device=os.environ.get("TUNEGATE_TRAIN_DEVICE") or None)
        files.write_outcome(outcome.to_json())
        return 0
    except Exception as exc:
        traceback.print_exc()
        message = f"Training failed: {type(exc).__name__}: {exc}"
        try:
            files.event(message, level="error")
            progress = files.read_json(files.progress) or {}
            error = {"code": "server_error", "message": message, "param": None, "line": None}
            files.write_outcome(
                {
                    "status": "failed",
                    "trained_tokens": int(progress.get("trained_tokens") or 0),
                    "error": error,
                    "hyperparameters": progress.get("hyperparameters"),
                    "step": int(progress.get("step") or 0),
                    "total_steps": progress.get("total_steps"),
                    "train_loss": None,
                    "model_dir": None,
                    "result_file": "step_metrics.csv",
                    "finished_at": int(time.time()),
                }
            )
        except Exception:
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    _die_with_parent()  # only as its own process: never in a caller's (a test's) process
    sys.exit(main())
