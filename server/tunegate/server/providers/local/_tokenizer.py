"""Tokenizers behind one small protocol, so the chat template does not care which one it has.

- `ByteTokenizer`: the built-in tiny model's tokenizer. Ids 0–255 are UTF-8 bytes; then
  `pad`, `bos`, `eos` and one marker per chat role. Needs no files from a model hub; it saves
  itself as `tunegate_tokenizer.json` next to the model weights.
- `HFChatTokenizer`: wraps a Hugging Face tokenizer of a `local:<path>` model. Role markers are
  the text `<|role|>\\n` run through that tokenizer; end of turn is its `eos_token_id`.

`load_tokenizer(model_dir)` picks the right one from the files in a model directory.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ROLES",
    "TOKENIZER_FILE",
    "ByteTokenizer",
    "ChatTokenizer",
    "HFChatTokenizer",
    "TextDecoder",
    "load_tokenizer",
]

ROLES = ("system", "user", "assistant", "tool", "function")
TOKENIZER_FILE = "tunegate_tokenizer.json"


class TextDecoder(Protocol):
    """Turns generated ids into text incrementally (for streaming)."""

    def push(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


class ChatTokenizer(Protocol):
    """What the chat template and the inference loop need from a tokenizer."""

    pad_id: int
    bos_id: int | None
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def role_marker(self, role: str) -> list[int]: ...

    def decoder(self) -> TextDecoder: ...

    def save(self, directory: Path) -> None: ...


class _ByteDecoder:
    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(bytes([token_id])) if token_id < 256 else ""

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class ByteTokenizer:
    """UTF-8 bytes (ids 0–255) plus specials: pad 256, bos 257, eos 258, then one id per role in
    `ROLES` order (system 259 … function 263). `vocab_size` is 264. Decoding skips specials."""

    vocab_size = 256 + 3 + len(ROLES)

    def __init__(self) -> None:
        self.pad_id = 256
        self.bos_id: int | None = 257
        self.eos_id = 258
        self._roles = {role: 259 + i for i, role in enumerate(ROLES)}

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def role_marker(self, role: str) -> list[int]:
        return [self._roles[role]]

    def decoder(self) -> TextDecoder:
        return _ByteDecoder()

    def save(self, directory: Path) -> None:
        spec = {"type": "tunegate-byte", "version": 1, "vocab_size": self.vocab_size}
        (directory / TOKENIZER_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> ByteTokenizer:
        spec = json.loads((directory / TOKENIZER_FILE).read_text(encoding="utf-8"))
        if spec.get("type") != "tunegate-byte":
            raise ValueError(f"{directory / TOKENIZER_FILE}: not a tunegate byte tokenizer")
        return cls()


class _HFDecoder:
    """Decodes the whole generated sequence each time and yields the new suffix; holds back
    text ending in U+FFFD (an incomplete multi-byte character)."""

    def __init__(self, hf: Any) -> None:
        self._hf = hf
        self._ids: list[int] = []
        self._sent = 0

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text: str = self._hf.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, self._sent = text[self._sent :], len(text)
        return piece

    def flush(self) -> str:
        text: str = self._hf.decode(self._ids, skip_special_tokens=True)
        piece, self._sent = text[self._sent :], len(text)
        return piece


class HFChatTokenizer:
    """A Hugging Face tokenizer (`AutoTokenizer`, loaded with `local_files_only=True`)."""

    def __init__(self, hf: Any) -> None:
        self.hf = hf
        eos = hf.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token")
        self.eos_id = int(eos)
        self.bos_id = None if hf.bos_token_id is None else int(hf.bos_token_id)
        self.pad_id = int(hf.pad_token_id) if hf.pad_token_id is not None else self.eos_id
        self._markers = {role: self.encode(f"<|{role}|>\n") for role in ROLES}

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.hf.decode(ids, skip_special_tokens=True))

    def role_marker(self, role: str) -> list[int]:
        return self._markers[role]

    def decoder(self) -> TextDecoder:
        return _HFDecoder(self.hf)

    def save(self, directory: Path) -> None:
        self.hf.save_pretrained(str(directory))


def load_tokenizer(model_dir: Path) -> ChatTokenizer:
    """The tokenizer stored in `model_dir`: tunegate's byte tokenizer when
    `tunegate_tokenizer.json` is there, else `AutoTokenizer` from local files only."""
    if (model_dir / TOKENIZER_FILE).is_file():
        return ByteTokenizer.load(model_dir)
    from transformers import AutoTokenizer

    return HFChatTokenizer(AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True))
