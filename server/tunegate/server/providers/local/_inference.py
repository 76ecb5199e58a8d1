"""Chat completions from a fine-tuned (or base) local model, token by token.

`ChatModel.load(model_dir)` loads once per directory (cached; thread-safe). `generate` renders
the messages with the training chat template (ending with the assistant marker), then samples
with a KV cache until the end-of-turn token, `max_tokens`, or a `stop` string, yielding text as
it is produced. The returned `Generation` is that iterator plus `finish_reason` ("stop" |
"length") and `completion_tokens`, valid once it is exhausted. `temperature=0` is greedy; a
`seed` makes sampling reproducible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from tunegate.server.providers.local._data import render_prompt, turns_from_messages
from tunegate.server.providers.local._model import load_for_inference
from tunegate.server.providers.local._tokenizer import ChatTokenizer

__all__ = ["ChatModel", "Generation"]


class Generation:
    """An `Iterator[str]` of text pieces; `finish_reason`/`completion_tokens` once exhausted."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.finish_reason: str | None = None
        self.completion_tokens = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax().item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        keep[0] = True
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator).item())


class ChatModel:
    """A loaded model + tokenizer. Generation holds a per-model lock (one at a time)."""

    _cache: ClassVar[dict[tuple[Path, str], ChatModel]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: Any, tokenizer: ChatTokenizer, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_length = int(getattr(model.config, "max_position_embeddings", 512) or 512)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path, device: str | None = None) -> ChatModel:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        key = (Path(model_dir).resolve(), device)
        with cls._cache_lock:
            if key not in cls._cache:
                model, tokenizer = load_for_inference(key[0], device)
                cls._cache[key] = cls(model, tokenizer, device)
            return cls._cache[key]

    @classmethod
    def evict(cls, model_dir: Path) -> None:
        """Forget every cached copy of `model_dir` (e.g. after its job was deleted)."""
        with cls._cache_lock:
            for key in [k for k in cls._cache if k[0] == Path(model_dir).resolve()]:
                del cls._cache[key]

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The rendered prompt. Raises `ValueError` for messages it cannot render."""
        return render_prompt(turns_from_messages(messages), self.tokenizer)

    def count_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Prompt tokens, for `usage.prompt_tokens`."""
        return len(self.prompt_ids(messages))

    def generate(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> Generation:
        """Starts generating (lazily: nothing runs until the first `next`). Prompts longer than
        the context keep their last tokens. Raises `ValueError` for unrenderable messages."""
        ids = self.prompt_ids(messages)
        room = max(1, self.max_length - 1)
        ids = ids[-room:]
        max_tokens = max(0, min(max_tokens, self.max_length - len(ids)))
        generation = Generation(iter(()))
        generation._pieces = self._run(generation, ids, max_tokens, temperature, top_p, seed, list(stop))
        return generation

    def _run(
        self,
        out: Generation,
        ids: list[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str],
    ) -> Iterator[str]:
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        decoder = self.tokenizer.decoder()
        hold = max((len(s) for s in stop), default=1) - 1  # text kept back while a stop may be forming
        text, sent = "", 0
        out.finish_reason = "length"
        with self._lock, torch.inference_mode():
            cache = None
            inputs = torch.tensor([ids], dtype=torch.long, device=self.device)
            for _ in range(max_tokens):
                result = self.model(input_ids=inputs, cache=cache, use_cache=True)
                cache = result.cache
                token = _sample(result.logits[0, -1], temperature, top_p, generator)
                if token == self.tokenizer.eos_id:
                    out.finish_reason = "stop"
                    break
                out.completion_tokens += 1
                text += decoder.push(token)
                cut = min(
                    (i for i in (text.find(s, max(0, sent - len(s))) for s in stop) if i >= 0), default=-1
                )
                if cut >= 0:
                    out.finish_reason = "stop"
                    if cut > sent:
                        yield text[sent:cut]
                    return
                if len(text) - hold > sent:
                    yield text[sent : len(text) - hold]
                    sent = len(text) - hold
                inputs = torch.tensor([[token]], dtype=torch.long, device=self.device)
        text += decoder.flush()
        if len(text) > sent:
            yield text[sent:]
