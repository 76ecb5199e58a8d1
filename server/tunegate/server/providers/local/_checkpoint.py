"""Checkpoints: enough to serve a model *and* to resume training exactly.

`checkpoints/step-N/` holds
- the weights: the full model (`model.safetensors` + config) or, for LoRA, the adapter
  (`adapter_model.safetensors` + `adapter_config.json`, whose base is the job's base model) —
  either way `_model.load_for_inference` can load the directory;
- the tokenizer;
- `trainer_state.pt`: step, trained tokens, optimizer and LR-scheduler state, the RNG states
  (torch CPU/CUDA, python `random`) and the metric rows so far.

The data position needs no state: the example order of epoch *e* is a permutation drawn from a
generator seeded with `(seed, e)`, so step N always maps to the same batch.

A checkpoint directory is built under a temporary name and renamed; only then is its line
appended to `checkpoints.jsonl`. Resuming uses the newest line whose directory exists.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from tunegate.server.providers.local._artifacts import Artifacts, atomic_dir
from tunegate.server.providers.local._model import save_model
from tunegate.server.providers.local._tokenizer import ChatTokenizer

__all__ = ["STATE_FILE", "capture_rng", "load_state", "newest_checkpoint", "restore_rng", "save_checkpoint"]

STATE_FILE = "trainer_state.pt"


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    files: Artifacts, step: int, model: Any, tokenizer: ChatTokenizer, state: dict[str, Any]
) -> Path:
    target = files.checkpoint(step)
    with atomic_dir(target) as tmp:
        save_model(model, tokenizer, tmp)
        torch.save(state, tmp / STATE_FILE)
    return target


def load_state(directory: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    return state


def newest_checkpoint(files: Artifacts) -> tuple[int, Path] | None:
    """(step, directory) of the newest complete checkpoint, or None."""
    for line in reversed(files.read_checkpoints()):
        path = files.root / str(line["path"])
        if (path / STATE_FILE).is_file():
            return int(line["step_number"]), path
    return None
