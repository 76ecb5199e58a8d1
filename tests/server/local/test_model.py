"""Base models: the built-in tiny model (offline, deterministic, idempotent) and `local:` dirs."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from tunegate.server.providers.local._model import (
    BASE_MODEL,
    ModelError,
    ensure_base_model,
    load_for_inference,
    load_for_training,
    resolve_model,
)
from tunegate.server.providers.local._tokenizer import ByteTokenizer, load_tokenizer


def test_tiny_model_is_made_offline_deterministically_and_once(tmp_path: Path) -> None:
    first = ensure_base_model(tmp_path / "a")
    assert first == tmp_path / "a" / BASE_MODEL
    assert {"config.json", "model.safetensors", "tunegate_tokenizer.json"} <= {
        p.name for p in first.iterdir()
    }
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_base_model(tmp_path / "a") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # not rewritten
    second = ensure_base_model(tmp_path / "b")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert [p.name for p in (tmp_path / "a").iterdir()] == [BASE_MODEL]  # no temporary left behind


def test_concurrent_creation_is_safe(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_base_model(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / BASE_MODEL] * 3
    assert [p.name for p in tmp_path.iterdir()] == [BASE_MODEL]


def test_resolve_model(tmp_path: Path) -> None:
    assert resolve_model(BASE_MODEL, tmp_path) == tmp_path / BASE_MODEL
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / BASE_MODEL, copy)
    assert resolve_model(f"local:{copy}", tmp_path) == copy.resolve()
    (tmp_path / "empty").mkdir()
    for name, message in [
        (f"local:{tmp_path / 'missing'}", "does not exist"),
        (f"local:{tmp_path / 'empty'}", "has no config.json"),
        ("gpt-4o-mini", "does not know model 'gpt-4o-mini'"),
    ]:
        with pytest.raises(ModelError, match=message) as info:
            resolve_model(name, tmp_path)
        assert info.value.param == "model"
        assert info.value.to_json()["param"] == "model"


def test_load_for_training_full_and_lora(tmp_path: Path) -> None:
    path = ensure_base_model(tmp_path)
    model, tokenizer = load_for_training(path, "cpu", lora=False)
    assert isinstance(tokenizer, ByteTokenizer)
    assert all(p.requires_grad for p in model.parameters())
    lora, _ = load_for_training(path, "cpu", lora=True)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model, _ = load_for_inference(path, "cpu")
    assert not model.training


def test_local_model_with_a_hugging_face_tokenizer(tmp_path: Path) -> None:
    """A `local:` directory with an ordinary HF tokenizer (built offline here) loads and renders."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{chr(c): c - 29 for c in range(32, 127)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>")  # type: ignore[no-untyped-call]
    target = tmp_path / "hf"
    shutil.copytree(ensure_base_model(tmp_path), target)
    (target / "tunegate_tokenizer.json").unlink()
    hf.save_pretrained(str(target))
    tok = load_tokenizer(target)
    assert tok.eos_id == 2
    assert tok.decode(tok.encode("hello")).replace(" ", "") == "hello"
    assert tok.role_marker("user")  # rendered as text
