"""What a training worker writes into its job directory, and how (atomically).

Layout (`<job_dir>/`)::

    spec.json            TrainSpec, written by the gateway before starting the worker
    control              optional; the gateway writes `pause` or `cancel` into it
    progress.json        {step, total_steps, epoch, trained_tokens, started_at, estimated_finish,
                          status, hyperparameters}   (atomic, refreshed every step)
    events.jsonl         {created_at, level, message, type, data}   (appended, one per line)
    checkpoints.jsonl    {step_number, created_at, metrics, path}   (appended after the
                          checkpoint directory is complete)
    checkpoints/step-N/  model weights + tokenizer (loadable for inference) + trainer_state.pt
    step_metrics.csv     step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy
    model/               the fine-tuned model (full or merged LoRA weights + tokenizer)
    outcome.json         {status, trained_tokens, error, hyperparameters, model_dir, ...} (atomic,
                          written last)

JSON files are replaced atomically (temp file + fsync + rename); directories are built under a
temporary name and renamed. Appended `.jsonl` lines are written whole with one `write`; readers
skip a trailing partial line (`read_jsonl`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["METRICS_COLUMNS", "Artifacts", "atomic_dir", "read_jsonl", "write_json_atomic"]

METRICS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yields an empty temporary directory beside `target`; renames it to `target` (replacing
    an existing one) when the block succeeds, removes it when the block fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a `.jsonl` file ([] when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # a writer is mid-line
        if line.strip():
            out.append(json.loads(line))
    return out


def _fmt(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6f}"


class Artifacts:
    """Paths and writers for the worker's files in one job directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = root / "spec.json"
        self.control = root / "control"
        self.progress = root / "progress.json"
        self.events = root / "events.jsonl"
        self.checkpoints = root / "checkpoints.jsonl"
        self.checkpoints_dir = root / "checkpoints"
        self.metrics_csv = root / "step_metrics.csv"
        self.model = root / "model"
        self.outcome = root / "outcome.json"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step}"

    def read_control(self) -> Literal["pause", "cancel"] | None:
        try:
            word = self.control.read_text(encoding="utf-8").strip().lower()
        except FileNotFoundError:
            return None
        return word if word in ("pause", "cancel") else None  # type: ignore[return-value]

    def event(
        self,
        message: str,
        *,
        level: Literal["info", "warn", "error"] = "info",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        record = {
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "type": "message" if data is None else "metrics",
            "data": None if data is None else dict(data),
        }
        self._append(self.events, record)

    def add_checkpoint(self, step: int, metrics: Mapping[str, float | int]) -> None:
        record = {
            "step_number": step,
            "created_at": int(time.time()),
            "metrics": dict(metrics),
            "path": f"checkpoints/step-{step}",
        }
        self._append(self.checkpoints, record)

    def write_progress(self, progress: Mapping[str, Any]) -> None:
        write_json_atomic(self.progress, dict(progress))

    def write_outcome(self, outcome: Mapping[str, Any]) -> None:
        write_json_atomic(self.outcome, dict(outcome))

    def write_metrics(self, rows: Sequence[Mapping[str, float | int | None]]) -> None:
        """Rewrites `step_metrics.csv` atomically from all rows so far."""
        lines = [",".join(METRICS_COLUMNS)]
        lines += [",".join(_fmt(row.get(col)) for col in METRICS_COLUMNS) for row in rows]
        fd, tmp = tempfile.mkstemp(prefix=".step_metrics.", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.metrics_csv)

    def read_events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.events)

    def read_checkpoints(self) -> list[dict[str, Any]]:
        return read_jsonl(self.checkpoints)

    def read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return obj

    @staticmethod
    def _append(path: Path, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with path.open("a", encoding="utf-8") as f:
            f.write(line)
