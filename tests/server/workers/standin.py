"""A stand-in for the local provider's `JobRunner`: records what it was asked to run, and can
hold a training task until it is cancelled (as a long training run would). Also runnable as a
worker process: `python -m tests.server.workers.standin DATABASE_URL MARKER_DIR` runs a
`QueueWorker` whose trainings never end and writes `<MARKER_DIR>/<job id>` when one starts."""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path

from tunegate.server.workers import QueueWorker, WorkerSettings


class StandInRunner:
    def __init__(self, *, hold: bool = False, marker_dir: Path | None = None) -> None:
        self.hold = hold
        self.marker_dir = marker_dir
        self.calls: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self._seen: defaultdict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)

    async def validate(self, job_id: str) -> None:
        self._record("validate", job_id)

    async def train(self, job_id: str) -> None:
        self._record("train", job_id)
        if self.marker_dir is not None:
            (self.marker_dir / job_id).write_text("started")
        if self.hold:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(job_id)
                if self.marker_dir is not None:
                    (self.marker_dir / f"{job_id}.cancelled").write_text("cancelled")
                raise

    def _record(self, kind: str, job_id: str) -> None:
        self.calls.append((kind, job_id))
        self._seen[(kind, job_id)].set()

    async def wait_for(self, kind: str, job_id: str) -> None:
        """Returns once `kind` ran for `job_id` (a stuck queue fails the test after 30 s)."""
        async with asyncio.timeout(30):
            await self._seen[(kind, job_id)].wait()


def fast_settings(**overrides: object) -> WorkerSettings:
    """Small heartbeat and stall windows so dead workers are noticed within seconds."""
    values: dict[str, object] = {
        "device": "cpu",
        "memory_mb": 8192,
        "heartbeat_seconds": 0.5,
        "stalled_seconds": 2.0,
        "stalled_check_seconds": 1,
    }
    values.update(overrides)
    return WorkerSettings(**values)  # type: ignore[arg-type]


async def _main(database_url: str, marker_dir: Path) -> None:
    """As `tunegate worker` runs (its signal handling included), on the stand-in runner."""
    from tunegate.server.cli import _wait_for_signal_or

    worker = QueueWorker(database_url, StandInRunner(hold=True, marker_dir=marker_dir), fast_settings())
    await worker.start()
    try:
        (marker_dir / "ready").write_text("ready")
        await _wait_for_signal_or(worker)
    finally:
        await worker.stop()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], Path(sys.argv[2])))
