"""One local job's directory as the *provider* sees it: the files it exchanges with the worker,
read and written safely. (The worker's own writers are `_artifacts.Artifacts`.)

Layout of `<root>/jobs/<native id>/`::

    job.json            the provider's OpenAI-shaped job state (written only by the provider)
    spec.json           the worker's `TrainSpec` (written by the provider before each start)
    control             `pause` / `cancel`, read by the worker between steps
    worker.pid          the running worker's pid (removed when it exits)
    worker.log          the worker's stdout and stderr
    job_events.jsonl    the job's event log as listed (provider lifecycle events plus the
                        worker's `events.jsonl`, copied in as it grows) — one writer, append-only
    tail.json           how far `events.jsonl` has been copied (byte offset)
    events.jsonl, progress.json, checkpoints.jsonl, checkpoints/, step_metrics.csv, model/,
    outcome.json        the worker's outputs

Every JSON document is replaced atomically (temporary file, fsync, rename), so a reader — or a
restarted server — sees either the old or the new version. JSONL readers ignore a trailing
partial line (the writer may be mid-append).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["JobDir", "iter_job_dirs", "read_json", "read_jsonl", "write_json"]


def write_json(path: Path, value: Any) -> None:
    """Replace `path` atomically with `value` as JSON."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as stream:
        json.dump(value, stream, separators=(",", ":"), sort_keys=True)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: Path, *, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete JSON-object lines of `path` from byte `offset`, and the offset just past the
    last complete line. Malformed lines are skipped (they still advance the offset)."""
    try:
        with path.open("rb") as stream:
            stream.seek(offset)
            data = stream.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    items: list[dict[str, Any]] = []
    for raw in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(raw)
            if isinstance(item, dict):
                items.append(item)
    return items, offset + end


@dataclass(frozen=True, slots=True)
class JobDir:
    """Paths of one job directory."""

    path: Path

    @property
    def job(self) -> Path:
        return self.path / "job.json"

    @property
    def spec(self) -> Path:
        return self.path / "spec.json"

    @property
    def control(self) -> Path:
        return self.path / "control"

    @property
    def pid(self) -> Path:
        return self.path / "worker.pid"

    @property
    def log(self) -> Path:
        return self.path / "worker.log"

    @property
    def job_events(self) -> Path:
        return self.path / "job_events.jsonl"

    @property
    def tail(self) -> Path:
        return self.path / "tail.json"

    @property
    def worker_events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def progress(self) -> Path:
        return self.path / "progress.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints.jsonl"

    @property
    def metrics(self) -> Path:
        return self.path / "step_metrics.csv"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def outcome(self) -> Path:
        return self.path / "outcome.json"

    def append_event(self, event: dict[str, Any]) -> None:
        """Append one event to the listed log (the provider is its only writer)."""
        line = json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n"
        with self.job_events.open("a", encoding="utf-8") as stream:
            stream.write(line)

    def events(self) -> list[dict[str, Any]]:
        """The listed events, oldest first."""
        return read_jsonl(self.job_events)[0]

    def checkpoint_lines(self) -> list[dict[str, Any]]:
        """The worker's checkpoints, oldest first."""
        return read_jsonl(self.checkpoints)[0]

    def has_checkpoint(self) -> bool:
        """Whether the worker left a checkpoint a resume can start from."""
        for line in reversed(self.checkpoint_lines()):
            path = line.get("path")
            if isinstance(path, str) and (self.path / path).exists():
                return True
        checkpoints = self.path / "checkpoints"
        return checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir())

    def set_control(self, value: str | None) -> None:
        """Write (or with None, remove) the control word the worker reads between steps."""
        if value is None:
            with contextlib.suppress(FileNotFoundError):
                self.control.unlink()
            return
        tmp = self.path / ".control.tmp"
        tmp.write_text(value, encoding="utf-8")
        os.replace(tmp, self.control)

    def recorded_pid(self) -> int | None:
        try:
            return int(self.pid.read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, limit: int = 2000) -> str:
        """The end of the worker's log (for an error message)."""
        try:
            with self.log.open("rb") as stream:
                stream.seek(0, os.SEEK_END)
                size = stream.tell()
                stream.seek(max(0, size - limit))
                return stream.read().decode("utf-8", "replace")
        except OSError:
            return ""


def iter_job_dirs(root: Path) -> Iterator[JobDir]:
    """Every job directory under `root` that holds a `job.json`."""
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if (path / "job.json").is_file():
            yield JobDir(path)
