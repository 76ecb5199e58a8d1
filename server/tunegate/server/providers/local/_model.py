"""Base models: the built-in `tunegate-tiny`, and Hugging Face models already on disk.

`tunegate-tiny` is made here, offline, the first time it is needed: a 2-layer Llama (hidden 64,
4 heads, intermediate 128, 512 positions; 116 k parameters) with seeded random weights and the
byte tokenizer, saved with `save_pretrained` (safetensors) under `models_dir/tunegate-tiny/`.
Making it twice gives identical weights. Two processes may race to make it: each writes a
private temporary directory and renames it into place; the loser discards its copy.

`local:<path>` names a Hugging Face model directory (config.json + weights + tokenizer); it is
loaded with `local_files_only=True`, so nothing is ever downloaded.

Training mode: `tunegate-tiny` is fine-tuned fully (it is tiny, and LoRA on random weights learns
little); `local:` models are fine-tuned with LoRA (r=8, alpha=16, on q/k/v/o projections) and the
adapter is merged into the weights saved for inference.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunegate.server.providers.local._tokenizer import ByteTokenizer, ChatTokenizer, load_tokenizer

__all__ = [
    "BASE_MODEL",
    "ModelError",
    "ensure_base_model",
    "load_for_inference",
    "load_for_training",
    "max_length_of",
    "resolve_model",
    "save_model",
    "uses_lora",
]

BASE_MODEL = "tunegate-tiny"
LOCAL_PREFIX = "local:"
_SEED = 20240611
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class ModelError(Exception):
    """The `model` of a job cannot be used. Same shape as `DataError` (`param` is `model`)."""

    def __init__(self, message: str, *, code: str = "model_not_found") -> None:
        super().__init__(message)
        self.message = message
        self.param = "model"
        self.line: int | None = None
        self.code = code

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": None}


def _tiny_config() -> Any:
    from transformers import LlamaConfig

    tok = ByteTokenizer()
    return LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_id,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        tie_word_embeddings=False,
    )


def ensure_base_model(models_dir: Path) -> Path:
    """`models_dir/tunegate-tiny`, created deterministically on first use. Idempotent."""
    target = models_dir / BASE_MODEL
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import LlamaForCausalLM

    _quiet()
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BASE_MODEL}.", dir=models_dir))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            model = LlamaForCausalLM(_tiny_config())
        model.save_pretrained(str(tmp))
        ByteTokenizer().save(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str, models_dir: Path) -> Path:
    """The directory holding `model`'s weights: `tunegate-tiny` or `local:<path>`."""
    if model == BASE_MODEL:
        return ensure_base_model(models_dir)
    if model.startswith(LOCAL_PREFIX):
        path = Path(model[len(LOCAL_PREFIX) :]).expanduser()
        if not path.is_dir():
            raise ModelError(f"Model directory {str(path)!r} does not exist")
        if not (path / "config.json").is_file():
            raise ModelError(f"Model directory {str(path)!r} has no config.json (not a Hugging Face model)")
        return path.resolve()
    raise ModelError(
        f"The local provider does not know model {model!r}: use {BASE_MODEL!r} or 'local:<model directory>'"
    )


def uses_lora(model: str) -> bool:
    """Whether a job on `model` trains a LoRA adapter (all `local:` models) or all weights."""
    return model != BASE_MODEL


def max_length_of(model: Any) -> int:
    """The context length used to truncate examples (capped at 2048 to bound CPU memory)."""
    return min(int(getattr(model.config, "max_position_embeddings", 512) or 512), 2048)


def _quiet() -> None:
    """No progress bars on stderr (a worker's stderr is a log, and loads are small)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _peft_quiet() -> Iterator[None]:
    """peft 0.21 still reads transformers' deprecated `is_gradient_checkpointing`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _load(path: Path, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    _quiet()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot load model from {str(path)!r}: {exc}", code="invalid_model") from exc
    return model.to(device)  # type: ignore[arg-type]


def load_for_training(
    path: Path, device: str, *, lora: bool, adapter: Path | None = None
) -> tuple[Any, ChatTokenizer]:
    """(model in train mode, tokenizer) from the model directory `path`. With `lora`, a peft
    model whose only trainable parameters are a new adapter's, or those of the saved adapter
    directory `adapter` (resuming); `model.disable_adapter()` then gives the base (DPO
    reference)."""
    tokenizer = load_tokenizer(path)
    model = _load(path, device)
    if lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none")
        with _peft_quiet():
            if adapter is None:
                model = get_peft_model(model, config)
            else:
                model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    model.train()
    return model, tokenizer


def load_for_inference(path: Path, device: str) -> tuple[Any, ChatTokenizer]:
    """(model in eval mode, tokenizer) from a model directory, or from a LoRA checkpoint
    directory (adapter_config.json: the adapter is applied to its base and merged)."""
    if (path / "adapter_config.json").is_file():
        from peft import PeftConfig, PeftModel

        base_path = Path(PeftConfig.from_pretrained(str(path)).base_model_name_or_path or "")
        with _peft_quiet():
            model = PeftModel.from_pretrained(_load(base_path, device), str(path)).merge_and_unload()
    else:
        model = _load(path, device)
    model.eval()
    return model, load_tokenizer(path)


def save_model(model: Any, tokenizer: ChatTokenizer, directory: Path) -> None:
    """Weights (safetensors) + tokenizer into `directory` (which may exist). Callers that need
    atomicity write into a temporary directory and rename it (see `_jobdir.atomic_dir`)."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save(directory)
