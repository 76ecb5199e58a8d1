"""`Trainer`: the step loop behind `_train.run` (see its theory of operation)."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import torch
from tunegate.server.providers.local._artifacts import Artifacts, atomic_dir
from tunegate.server.providers.local._checkpoint import (
    capture_rng,
    load_state,
    newest_checkpoint,
    restore_rng,
    save_checkpoint,
)
from tunegate.server.providers.local._data import (
    Conversation,
    Encoded,
    Example,
    Preference,
    read_examples,
    render_preference,
    render_supervised,
)
from tunegate.server.providers.local._model import load_for_training, max_length_of, save_model, uses_lora
from tunegate.server.providers.local._objectives import StepResult, collate, dpo_step, supervised_step
from tunegate.server.providers.local._train import Control, Outcome, Resolved, TrainSpec, base_learning_rate

__all__ = ["MAX_VALID_EXAMPLES", "Trainer"]

MAX_VALID_EXAMPLES = 64
"""Validation metrics use at most this many examples (the first ones), to bound their cost."""

Item = Encoded | tuple[Encoded, Encoded]


class Trainer:
    """One training run (fresh, or resumed from the newest checkpoint when `spec.resume`)."""

    def __init__(
        self, spec: TrainSpec, resolved: Resolved, base_path: Path, files: Artifacts, *, device: str
    ):
        self.spec, self.hp, self.files, self.device = spec, resolved, files, device
        self.lora = uses_lora(spec.model)
        resume_from = newest_checkpoint(files) if spec.resume else None
        if resume_from is None:
            self.model, self.tokenizer = load_for_training(base_path, device, lora=self.lora)
        elif self.lora:
            self.model, self.tokenizer = load_for_training(
                base_path, device, lora=True, adapter=resume_from[1]
            )
        else:
            self.model, self.tokenizer = load_for_training(resume_from[1], device, lora=False)
        self.max_length = max_length_of(self.model)
        examples = read_examples(
            spec.training_file, spec.method, param="training_file", min_examples=spec.min_examples
        )
        self.train_set = self._render(examples)
        self.valid_set: list[Item] = []
        if spec.validation_file is not None:
            examples = read_examples(
                spec.validation_file, spec.method, param="validation_file", min_examples=1
            )
            self.valid_set = self._render(examples[:MAX_VALID_EXAMPLES])
        self.steps_per_epoch = math.ceil(len(self.train_set) / resolved.batch_size)
        self.total_steps = self.steps_per_epoch * resolved.n_epochs
        self.log_every = max(1, self.total_steps // 25)
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = base_learning_rate(spec.model) * resolved.learning_rate_multiplier
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        total = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: max(0.0, 1.0 - s / total)
        )
        self.reference_model: Any = self.model
        self.reference: Any = contextlib.nullcontext
        if spec.method == "dpo":
            if self.lora:
                self.reference = self.model.disable_adapter
            else:  # a frozen copy of the base model
                self.reference_model, _ = load_for_training(base_path, device, lora=False)
                self.reference_model.eval().requires_grad_(False)
        self.step = 0
        self.trained_tokens = 0
        self.rows: list[dict[str, float | int | None]] = []
        self._orders: dict[int, list[int]] = {}
        if resume_from is not None:
            state = load_state(resume_from[1])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            restore_rng(state["rng"])
            self.step, self.trained_tokens, self.rows = state["step"], state["trained_tokens"], state["rows"]
        self.resumed_from = None if resume_from is None else resume_from[0]

    # -- data ---------------------------------------------------------------------------------

    def _render(self, examples: list[Example]) -> list[Item]:
        out: list[Item] = []
        for e in examples:
            if isinstance(e, Conversation):
                out.append(render_supervised(e, self.tokenizer, self.max_length))
            elif isinstance(e, Preference):
                out.append(render_preference(e, self.tokenizer, self.max_length))
        return out

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            g = torch.Generator().manual_seed((self.spec.seed << 16) + epoch)
            self._orders = {epoch: torch.randperm(len(self.train_set), generator=g).tolist()}
        return self._orders[epoch]

    def _batch(self, step: int) -> list[Item]:
        epoch, index = divmod(step - 1, self.steps_per_epoch)
        size = self.hp.batch_size
        return [self.train_set[i] for i in self._order(epoch)[index * size : (index + 1) * size]]

    # -- steps --------------------------------------------------------------------------------

    def _forward(self, items: list[Item]) -> StepResult:
        if self.spec.method == "dpo":
            pairs = [i for i in items if isinstance(i, tuple)]
            return dpo_step(
                self.model,
                self.reference_model,
                self.reference,
                pairs,
                beta=self.hp.beta,
                pad_id=self.tokenizer.pad_id,
                device=self.device,
            )
        singles = [i for i in items if isinstance(i, Encoded)]
        return supervised_step(self.model, collate(singles, self.tokenizer.pad_id, self.device))

    def _train_step(self, step: int) -> StepResult:
        result = self._forward(self._batch(step))
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return result

    def _validate(self) -> tuple[float, float] | None:
        """(loss, accuracy) over the validation examples, weighted by batch, or None."""
        if not self.valid_set:
            return None
        self.model.eval()
        losses, accs, size = [], [], self.hp.batch_size
        with torch.no_grad():
            for start in range(0, len(self.valid_set), size):
                chunk = self.valid_set[start : start + size]
                result = self._forward(chunk)
                losses.append(float(result.loss.item()) * len(chunk))
                accs.append(result.accuracy * len(chunk))
        self.model.train()
        return sum(losses) / len(self.valid_set), sum(accs) / len(self.valid_set)

    # -- files --------------------------------------------------------------------------------

    def _progress(self, status: str, started_at: int, rate: float | None) -> None:
        remaining = self.total_steps - self.step
        self.files.write_progress(
            {
                "status": status,
                "step": self.step,
                "total_steps": self.total_steps,
                "epoch": min(self.hp.n_epochs, self.step // self.steps_per_epoch + 1),
                "trained_tokens": self.trained_tokens,
                "started_at": started_at,
                "estimated_finish": None
                if rate is None or status != "running"
                else int(time.time() + remaining / rate),
                "hyperparameters": self.hp.to_json(self.spec.method),
            }
        )

    def _checkpoint(self, row: dict[str, float | int | None]) -> None:
        if self.files.checkpoint(self.step).exists():
            return
        valid = self._validate() if self.step > 0 else None
        state = {
            "step": self.step,
            "trained_tokens": self.trained_tokens,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
            "rows": self.rows,
        }
        save_checkpoint(self.files, self.step, self.model, self.tokenizer, state)
        metrics: dict[str, float | int] = {
            k: v for k, v in row.items() if v is not None and k != "train_accuracy"
        }
        metrics["step"] = self.step
        if "train_accuracy" in row and row["train_accuracy"] is not None:
            metrics["train_mean_token_accuracy"] = row["train_accuracy"]
        if valid is not None:
            metrics["valid_loss"] = metrics["full_valid_loss"] = valid[0]
            metrics["valid_mean_token_accuracy"] = metrics["full_valid_mean_token_accuracy"] = valid[1]
        self.files.add_checkpoint(self.step, metrics)
        self.files.event(f"Checkpoint created at step {self.step}")

    def _outcome(self, status: Any, *, model_dir: str | None = None) -> Outcome:
        last = self.rows[-1]["train_loss"] if self.rows else None
        return Outcome(
            status,
            trained_tokens=self.trained_tokens,
            hyperparameters=self.hp,
            method=self.spec.method,
            step=self.step,
            total_steps=self.total_steps,
            train_loss=None if last is None else float(last),
            model_dir=model_dir,
        )

    # -- the loop -----------------------------------------------------------------------------

    def train(self, control: Control) -> Outcome:
        started_at, t0, first_step = int(time.time()), time.monotonic(), self.step
        if self.resumed_from is None:
            self.files.event(f"Training started: {self.total_steps} steps, {len(self.train_set)} examples")
        else:
            self.files.event(f"Training resumed from step {self.resumed_from}")
        self._progress("running", started_at, None)
        last_progress = time.monotonic()
        tokens_here = 0
        while self.step < self.total_steps:
            action = control.poll(self.step)
            if action == "cancel":
                self.files.event(f"Training cancelled at step {self.step}")
                self.files.write_metrics(self.rows)
                self._progress("cancelled", started_at, None)
                return self._outcome("cancelled")
            if action == "pause":
                self._checkpoint(self.rows[-1] if self.rows else {})
                self.files.write_metrics(self.rows)
                self.files.event(f"Training paused at step {self.step}")
                self._progress("paused", started_at, None)
                return self._outcome("paused")
            self.step += 1
            result = self._train_step(self.step)
            self.trained_tokens += result.tokens
            tokens_here += result.tokens
            loss = float(result.loss.item())
            row: dict[str, float | int | None] = {
                "step": self.step,
                "train_loss": loss,
                "train_accuracy": result.accuracy,
            }
            if self.step % self.log_every == 0 or self.step in (1, self.total_steps):
                self._log(row)
            self.rows.append(row)
            if self.step % self.steps_per_epoch == 0:
                self.files.event(f"Epoch {self.step // self.steps_per_epoch}/{self.hp.n_epochs} finished")
                self._checkpoint(row)
                self.files.write_metrics(self.rows)
            if time.monotonic() - last_progress > 0.5:
                elapsed = time.monotonic() - t0
                self._progress("running", started_at, (self.step - first_step) / max(elapsed, 1e-9))
                last_progress = time.monotonic()
        elapsed = time.monotonic() - t0
        model = self.model.merge_and_unload() if self.lora else self.model
        with atomic_dir(self.files.model) as tmp:
            save_model(model, self.tokenizer, tmp)
        self.files.write_metrics(self.rows)
        self.files.event("New fine-tuned model created")
        self.files.event(
            f"Training finished: {tokens_here} tokens in {elapsed:.1f}s"
            f" ({tokens_here / max(elapsed, 1e-9):.0f} tokens/s)"
        )
        self._progress("succeeded", started_at, None)
        return self._outcome("succeeded", model_dir="model")

    def _log(self, row: dict[str, float | int | None]) -> None:
        data: dict[str, float | int] = {
            "step": self.step,
            "train_loss": float(row["train_loss"] or 0.0),
            "train_mean_token_accuracy": float(row["train_accuracy"] or 0.0),
            "total_steps": self.total_steps,
        }
        message = f"Step {self.step}/{self.total_steps}: training loss={data['train_loss']:.4f}"
        valid = self._validate()
        if valid is not None:
            row["valid_loss"], row["valid_mean_token_accuracy"] = valid
            data["valid_loss"], data["valid_mean_token_accuracy"] = valid
            message += f", validation loss={valid[0]:.4f}"
        self.files.event(message, data=data)
