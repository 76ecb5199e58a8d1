"""Chat generation from a trained tiny model: streaming pieces, stops, seeds, token counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from tunegate.server.providers.local._inference import ChatModel
from tunegate.server.providers.local._model import BASE_MODEL, ensure_base_model
from tunegate.server.providers.local._train import Control, TrainSpec, run

from tests.server.local.test_data import sft_line, write_jsonl

ANSWER = "The gateway says hello."


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 60 steps to answer every question with ANSWER."""
    root = tmp_path_factory.mktemp("inference")
    write_jsonl(root / "train.jsonl", [sft_line(f"Who are you, {name}?", ANSWER) for name in "abcdefghijkl"])
    spec = TrainSpec(
        job_id="ftjob-inference",
        model=BASE_MODEL,
        models_dir=root / "models",
        training_file=root / "train.jsonl",
        validation_file=None,
        output_dir=root / "job",
        n_epochs=20,
        batch_size=4,
        learning_rate_multiplier=2.0,
        seed=1,
    )
    assert run(spec, control=Control(spec.output_dir)).status == "succeeded"
    return spec.output_dir / "model"


MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Who are you, c?"}]


def test_greedy_answer_is_the_trained_answer_streamed_in_pieces(trained: Path) -> None:
    model = ChatModel.load(trained)
    assert ChatModel.load(trained) is model  # cached
    generation = model.generate(MESSAGES, max_tokens=64, temperature=0)
    pieces = list(generation)
    assert len(pieces) > 1
    assert "".join(pieces) == ANSWER
    assert generation.finish_reason == "stop"
    assert generation.completion_tokens == len(ANSWER.encode())
    assert model.count_tokens(MESSAGES) == 1 + 2 * 2 + len("You are terse.") + len("Who are you, c?") + 1


def test_max_tokens_stop_strings_and_seeds(trained: Path) -> None:
    model = ChatModel.load(trained)
    short = model.generate(MESSAGES, max_tokens=5, temperature=0)
    assert "".join(short) == ANSWER[:5] and short.finish_reason == "length"
    stopped = model.generate(MESSAGES, temperature=0, stop=["says"])
    assert "".join(stopped) == "The gateway " and stopped.finish_reason == "stop"
    a = "".join(model.generate(MESSAGES, temperature=1.5, seed=3, max_tokens=20))
    b = "".join(model.generate(MESSAGES, temperature=1.5, seed=3, max_tokens=20))
    assert a == b
    assert "".join(model.generate(MESSAGES, temperature=1.0, top_p=0.01, seed=4)) == ANSWER  # top-p → greedy


def test_base_model_generates_something_and_bad_messages_raise(tmp_path: Path) -> None:
    model = ChatModel.load(ensure_base_model(tmp_path))
    generation = model.generate([{"role": "user", "content": "hi"}], max_tokens=8, seed=0)
    text = "".join(generation)
    assert generation.completion_tokens <= 8 and isinstance(text, str)
    with pytest.raises(ValueError, match="missing 'role'"):
        model.generate([{"content": "hi"}])
    ChatModel.evict(tmp_path / BASE_MODEL)
    assert ChatModel.load(tmp_path / BASE_MODEL) is not model
