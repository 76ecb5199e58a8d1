"""The training loop: a job spec in, a fine-tuned model and its job-directory files out.

Theory of operation
-------------------
`run(spec, control=...)` goes through four phases, each reflected in `progress.json`'s status:

1. `validating_files` — resolve the base model (`ModelError`, param `model`) and validate the
   training/validation files with the model's tokenizer (`DataError` with line and param). A
   failure ends the run with status `failed` and that error; nothing is trained.
2. `running` — seed everything (`torch`, `random`), load the model (fully trainable for
   `tunegate-tiny`, LoRA for `local:` models), build AdamW + a linear-decay LR schedule, and
   train for `n_epochs × ceil(examples / batch_size)` steps. Epoch *e*'s example order is a
   permutation from a generator seeded with `(seed, e)`, so a step number alone determines its
   batch: same data + same seed ⇒ the same loss curve, and resuming needs no data cursor.
3. Between steps `Control.poll` is asked for `pause` / `cancel` (the `control` file, or
   SIGTERM). `cancel` stops at once (status `cancelled`, no model). `pause` writes a checkpoint
   at the current step and stops (status `paused`). At the end of every epoch a checkpoint is
   written too (see `_checkpoint`), with validation metrics when there is a validation file.
4. Finish — the final weights (LoRA merged) go to `model/`, `step_metrics.csv` is complete, and
   the status is `succeeded`.

`spec.resume=True` restarts phase 2 from the newest checkpoint: weights, optimizer, scheduler,
RNG state and metric history come back, and training continues at the next step — a paused and
resumed run ends with the same weights and losses as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunegate.server.providers.local._artifacts import Artifacts
from tunegate.server.providers.local._data import DataError, DataReport, Method

__all__ = [
    "Control",
    "Outcome",
    "Resolved",
    "Status",
    "TrainSpec",
    "base_learning_rate",
    "resolve_hyperparameters",
    "run",
]

Auto = Literal["auto"]
Status = Literal["succeeded", "failed", "cancelled", "paused"]


@dataclass(frozen=True)
class TrainSpec:
    """Everything a worker needs to train one job; `spec.json` in the job directory."""

    job_id: str
    model: str
    """`tunegate-tiny` or `local:<Hugging Face model directory>`."""
    models_dir: Path
    training_file: Path
    validation_file: Path | None
    output_dir: Path
    method: Method = "supervised"
    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    beta: float | Auto = "auto"
    seed: int = 0
    suffix: str | None = None
    resume: bool = False
    """Continue from the newest checkpoint in `output_dir` instead of starting over."""
    min_examples: int = 10
    """OpenAI's minimum number of training examples."""

    def to_json(self) -> dict[str, Any]:
        obj = dataclasses.asdict(self)
        for key in ("models_dir", "training_file", "validation_file", "output_dir"):
            obj[key] = None if obj[key] is None else str(obj[key])
        return obj

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | str) -> TrainSpec:
        data = dict(json.loads(obj) if isinstance(obj, str) else obj)
        for key in ("models_dir", "training_file", "output_dir"):
            data[key] = Path(data[key])
        data["validation_file"] = Path(data["validation_file"]) if data.get("validation_file") else None
        for key in ("n_epochs", "batch_size", "learning_rate_multiplier", "beta"):
            if data.get(key) is None:
                data[key] = "auto"  # null means auto, as in OpenAI's requests
        if data.get("seed") is None:
            data["seed"] = 0
        return cls(**data)


@dataclass(frozen=True)
class Resolved:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    beta: float

    def to_json(self, method: Method) -> dict[str, Any]:
        obj: dict[str, Any] = dataclasses.asdict(self)
        if method != "dpo":
            del obj["beta"]
        return obj


def resolve_hyperparameters(spec: TrainSpec, report: DataReport) -> Resolved:
    """Resolves `"auto"` the way OpenAI documents/its cookbook estimates it, scaled to a CPU:

    - `n_epochs`: 3; but when `examples × 3 < 100`, `min(25, 100 // examples)` (small datasets
      see each example ~100 times), and when `examples × 3 > 25 000`, `max(1, 25 000 //
      examples)`;
    - `batch_size`: ≈ 0.2 % of the examples, clamped to 1…8;
    - `learning_rate_multiplier`: 1.0 (× `base_learning_rate`: 5e-3 for a full fine-tune of
      `tunegate-tiny`, 2e-4 for LoRA);
    - `beta` (DPO): 0.1.
    """
    n = report.examples
    if spec.n_epochs != "auto":
        epochs = int(spec.n_epochs)
    elif n * 3 < 100:
        epochs = min(25, 100 // n)
    elif n * 3 > 25_000:
        epochs = max(1, 25_000 // n)
    else:
        epochs = 3
    batch = int(spec.batch_size) if spec.batch_size != "auto" else max(1, min(8, round(n * 0.002)))
    multiplier = 1.0 if spec.learning_rate_multiplier == "auto" else float(spec.learning_rate_multiplier)
    beta = 0.1 if spec.beta == "auto" else float(spec.beta)
    return Resolved(epochs, batch, multiplier, beta)


def base_learning_rate(model: str) -> float:
    from tunegate.server.providers.local._model import uses_lora

    return 2e-4 if uses_lora(model) else 5e-3


class Control:
    """How a running job learns that it should stop. `poll` is called between steps and answers
    `cancel` after SIGTERM (`install_signal_handler`) or `request("cancel")`, else the word in
    `<output_dir>/control` (`pause` or `cancel`), else None. Subclass it to script stops."""

    def __init__(self, output_dir: Path) -> None:
        self._files = Artifacts(output_dir)
        self._requested: Literal["pause", "cancel"] | None = None

    def request(self, action: Literal["pause", "cancel"]) -> None:
        self._requested = action

    def install_signal_handler(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request("cancel"))

    def poll(self, step: int) -> Literal["pause", "cancel"] | None:
        """`step` is the number of steps completed so far."""
        return self._requested or self._files.read_control()


@dataclass(frozen=True)
class Outcome:
    """How a run ended; `outcome.json` is `to_json()`."""

    status: Status
    trained_tokens: int = 0
    error: Any = None
    """A `DataError` or `ModelError` (both have message/code/param/line and `to_json`)."""
    hyperparameters: Resolved | None = None
    method: Method = "supervised"
    step: int = 0
    total_steps: int = 0
    train_loss: float | None = None
    model_dir: str | None = None
    """`model` (relative to the job directory) when succeeded."""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "trained_tokens": self.trained_tokens,
            "error": None if self.error is None else self.error.to_json(),
            "hyperparameters": None
            if self.hyperparameters is None
            else self.hyperparameters.to_json(self.method),
            "step": self.step,
            "total_steps": self.total_steps,
            "train_loss": self.train_loss,
            "model_dir": self.model_dir,
            "result_file": "step_metrics.csv",
            "finished_at": int(time.time()),
        }


def _validate(spec: TrainSpec, files: Artifacts) -> tuple[Path, DataReport, DataReport | None]:
    from tunegate.server.providers.local._data import validate_file
    from tunegate.server.providers.local._model import resolve_model
    from tunegate.server.providers.local._tokenizer import load_tokenizer

    path = resolve_model(spec.model, spec.models_dir)
    tokenizer = load_tokenizer(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    max_length = min(int(config.get("max_position_embeddings") or 512), 2048)
    files.event(f"Validating training file: {spec.training_file.name}")
    report = validate_file(
        spec.training_file,
        spec.method,
        param="training_file",
        min_examples=spec.min_examples,
        tokenizer=tokenizer,
        max_length=max_length,
    )
    valid = None
    if spec.validation_file is not None:
        files.event(f"Validating validation file: {spec.validation_file.name}")
        valid = validate_file(
            spec.validation_file,
            spec.method,
            param="validation_file",
            min_examples=1,
            tokenizer=tokenizer,
            max_length=max_length,
        )
    files.event("Files validated")
    return path, report, valid


def run(spec: TrainSpec, *, control: Control, device: str | None = None) -> Outcome:
    """Validates, trains and writes the job directory (module docstring). Data and model
    problems end in `Outcome(status="failed", error=...)`; anything else raises."""
    from tunegate.server.providers.local._model import ModelError

    files = Artifacts(spec.output_dir)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    if spec.resume and files.read_control() == "pause":
        files.control.unlink(missing_ok=True)  # the pause that stopped the previous run
    files.write_progress({"status": "validating_files", "step": 0, "total_steps": None})
    try:
        base_path, report, _ = _validate(spec, files)
    except (DataError, ModelError) as exc:
        files.event(exc.message, level="error")
        files.write_progress({"status": "failed", "step": 0, "total_steps": None})
        return Outcome("failed", error=exc, method=spec.method)
    resolved = resolve_hyperparameters(spec, report)

    import torch
    from tunegate.server.providers.local._loop import Trainer

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    trainer = Trainer(spec, resolved, base_path, files, device=device)
    return trainer.train(control)
