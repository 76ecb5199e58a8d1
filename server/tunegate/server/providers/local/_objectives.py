"""Losses and metrics: supervised next-token cross-entropy, and DPO.

Both take already-rendered examples (`Encoded`, from `_data`) and return a `StepResult` whose
`loss` carries the graph (for `backward`) and whose `metrics` are plain floats:

- supervised: `loss` = mean cross-entropy over the trained tokens of the batch (loss mask 1),
  `accuracy` = fraction of those tokens the model predicts exactly (greedy);
- DPO: `loss` = mean of `-log σ(β·((π_c − ref_c) − (π_r − ref_r)))` where `π_*`/`ref_*` are the
  summed log-probabilities of the chosen/rejected response under the policy / frozen reference,
  `accuracy` = fraction of pairs whose implicit reward prefers the chosen response (margin > 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tunegate.server.providers.local._data import Encoded

__all__ = ["Batch", "StepResult", "collate", "dpo_step", "supervised_step"]

Reference = Callable[[], contextlib.AbstractContextManager[Any]]
"""Enters a context in which calling `reference_model` computes the reference (e.g. a peft
model's `disable_adapter`), or a null context when the reference is a separate model."""


@dataclass(frozen=True, slots=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] right-padded
    attention_mask: torch.Tensor  # [B, T] 1 on real tokens
    loss_mask: torch.Tensor  # [B, T] 1 on trained tokens

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum().item())


@dataclass(frozen=True, slots=True)
class StepResult:
    loss: torch.Tensor
    accuracy: float
    tokens: int


def collate(examples: Sequence[Encoded], pad_id: int, device: str | torch.device) -> Batch:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        attn[row, :n] = 1
        mask[row, :n] = torch.tensor(e.loss_mask, dtype=torch.long)
    return Batch(ids.to(device), attn.to(device), mask.to(device))


def _shifted(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits predicting token t+1, targets, target mask as float)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    return logits, batch.input_ids[:, 1:], batch.loss_mask[:, 1:].float()


def supervised_step(model: Any, batch: Batch) -> StepResult:
    logits, targets, mask = _shifted(model, batch)
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    count = mask.sum().clamp(min=1.0)
    loss = (per_token * mask).sum() / count
    correct = ((logits.argmax(-1) == targets).float() * mask).sum() / count
    return StepResult(loss, float(correct.item()), batch.tokens)


def _sequence_logps(model: Any, batch: Batch) -> torch.Tensor:
    logits, targets, mask = _shifted(model, batch)
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(-1)


def dpo_step(
    model: Any,
    reference_model: Any,
    reference: Reference,
    pairs: Sequence[tuple[Encoded, Encoded]],
    *,
    beta: float,
    pad_id: int,
    device: str | torch.device,
) -> StepResult:
    """One DPO batch: chosen and rejected sequences go through the model as one batch."""
    batch = collate([p[0] for p in pairs] + [p[1] for p in pairs], pad_id, device)
    n = len(pairs)
    policy = _sequence_logps(model, batch)
    with torch.no_grad(), reference():
        ref = _sequence_logps(reference_model, batch)
    margin = beta * ((policy[:n] - ref[:n]) - (policy[n:] - ref[n:]))
    loss = -F.logsigmoid(margin).mean()
    accuracy = float((margin > 0).float().mean().item())
    return StepResult(loss, accuracy, batch.tokens)
