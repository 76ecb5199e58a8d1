"""The training loop on the tiny model: learning, determinism, pause/resume, cancel, files."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from tunegate.server.providers.local import worker
from tunegate.server.providers.local._artifacts import read_jsonl
from tunegate.server.providers.local._data import DataReport
from tunegate.server.providers.local._model import BASE_MODEL, ensure_base_model, load_for_inference
from tunegate.server.providers.local._train import Control, Outcome, TrainSpec, resolve_hyperparameters, run

from tests.server.local.test_data import dpo_line, sft_lines, write_jsonl

REPO = Path(__file__).resolve().parents[3]


class StopAt(Control):
    """Asks for `action` once `step` steps are done."""

    def __init__(self, output_dir: Path, step: int, action: Literal["pause", "cancel"]) -> None:
        super().__init__(output_dir)
        self.step, self.action = step, action

    def poll(self, step: int) -> Literal["pause", "cancel"] | None:
        return self.action if step == self.step else super().poll(step)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models")
    ensure_base_model(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_jsonl(root / "train.jsonl", sft_lines(12))
    write_jsonl(root / "valid.jsonl", sft_lines(4))
    write_jsonl(root / "dpo.jsonl", [dpo_line(f"Is {i} fine?", "Yes, fine.", "No way!") for i in range(12)])
    return root


def make_spec(models_dir: Path, data: Path, out: Path, **overrides: Any) -> TrainSpec:
    base = TrainSpec(
        job_id="ftjob-test",
        model=BASE_MODEL,
        models_dir=models_dir,
        training_file=data / "train.jsonl",
        validation_file=None,
        output_dir=out,
        n_epochs=3,
        batch_size=4,
        learning_rate_multiplier=2.0,
        seed=7,
    )
    return dataclasses.replace(base, **overrides)


def losses(job: Path) -> list[float]:
    with (job / "step_metrics.csv").open() as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def learned(models_dir: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Outcome]:
    """10 epochs × 3 steps with a validation file."""
    out = tmp_path_factory.mktemp("learned")
    spec = make_spec(models_dir, data, out, validation_file=data / "valid.jsonl", n_epochs=10)
    return out, run(spec, control=Control(out))


@pytest.fixture(scope="module")
def straight(models_dir: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Outcome]:
    out = tmp_path_factory.mktemp("straight")
    return out, run(make_spec(models_dir, data, out), control=Control(out))


def test_supervised_training_learns_and_writes_well_formed_files(learned: tuple[Path, Outcome]) -> None:
    job, outcome = learned
    assert outcome.status == "succeeded" and outcome.error is None
    assert (outcome.step, outcome.total_steps) == (30, 30)
    curve = losses(job)
    assert len(curve) == 30
    assert sum(curve[-3:]) / 3 < 0.5 * sum(curve[:3]) / 3
    assert outcome.trained_tokens > 0

    events = read_jsonl(job / "events.jsonl")
    assert all(set(e) == {"created_at", "level", "message", "type", "data"} for e in events)
    messages = [e["message"] for e in events]
    assert messages[0] == "Validating training file: train.jsonl"
    assert "Training started: 30 steps, 12 examples" in messages
    assert "Epoch 1/10 finished" in messages and "New fine-tuned model created" in messages
    metrics = [e for e in events if e["type"] == "metrics"]
    assert metrics[0]["message"].startswith("Step 1/30: training loss=")
    assert {"step", "train_loss", "train_mean_token_accuracy", "total_steps", "valid_loss"} <= set(
        metrics[0]["data"]
    )

    checkpoints = read_jsonl(job / "checkpoints.jsonl")
    assert [c["step_number"] for c in checkpoints] == [3 * e for e in range(1, 11)]
    last = checkpoints[-1]
    assert last["path"] == "checkpoints/step-30" and (job / last["path"] / "model.safetensors").is_file()
    assert {
        "step",
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    } <= set(last["metrics"])

    with (job / "step_metrics.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert all(row[3] != "" for row in rows[1:])  # 30 steps: every step is a log step

    progress = json.loads((job / "progress.json").read_text())
    assert progress["status"] == "succeeded" and progress["step"] == progress["total_steps"] == 30
    assert progress["hyperparameters"] == {"n_epochs": 10, "batch_size": 4, "learning_rate_multiplier": 2.0}
    model, _ = load_for_inference(job / "model", "cpu")
    assert model.config.vocab_size == 264


def test_same_seed_same_curve_other_seed_other_curve(
    models_dir: Path, data: Path, tmp_path: Path, straight: tuple[Path, Outcome]
) -> None:
    again = run(make_spec(models_dir, data, tmp_path / "a"), control=Control(tmp_path / "a"))
    assert losses(tmp_path / "a") == losses(straight[0])
    assert again.trained_tokens == straight[1].trained_tokens
    run(make_spec(models_dir, data, tmp_path / "b", seed=8), control=Control(tmp_path / "b"))
    assert losses(tmp_path / "b") != losses(straight[0])


def test_pause_then_resume_matches_an_uninterrupted_run(
    models_dir: Path, data: Path, tmp_path: Path, straight: tuple[Path, Outcome]
) -> None:
    spec = make_spec(models_dir, data, tmp_path)
    paused = run(spec, control=StopAt(tmp_path, 4, "pause"))
    assert (paused.status, paused.step) == ("paused", 4)
    assert [c["step_number"] for c in read_jsonl(tmp_path / "checkpoints.jsonl")] == [3, 4]
    (tmp_path / "control").write_text("pause")  # stale: a resumed run ignores it
    resumed = run(dataclasses.replace(spec, resume=True), control=Control(tmp_path))
    assert resumed.status == "succeeded"
    assert losses(tmp_path) == losses(straight[0])
    assert resumed.train_loss == straight[1].train_loss
    assert resumed.trained_tokens == straight[1].trained_tokens
    messages = [e["message"] for e in read_jsonl(tmp_path / "events.jsonl")]
    assert "Training paused at step 4" in messages and "Training resumed from step 4" in messages


def test_cancel_stops_between_steps(models_dir: Path, data: Path, tmp_path: Path) -> None:
    outcome = run(make_spec(models_dir, data, tmp_path), control=StopAt(tmp_path, 2, "cancel"))
    assert (outcome.status, outcome.step) == ("cancelled", 2)
    assert not (tmp_path / "model").exists()
    assert json.loads((tmp_path / "progress.json").read_text())["status"] == "cancelled"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "control").write_text("cancel\n")
    outcome = run(make_spec(models_dir, data, tmp_path / "b"), control=Control(tmp_path / "b"))
    assert (outcome.status, outcome.step) == ("cancelled", 0)


def test_dpo_prefers_the_chosen_answer(models_dir: Path, data: Path, tmp_path: Path) -> None:
    spec = make_spec(models_dir, data, tmp_path, method="dpo", training_file=data / "dpo.jsonl", n_epochs=2)
    outcome = run(spec, control=Control(tmp_path))
    assert outcome.status == "succeeded"
    assert outcome.to_json()["hyperparameters"]["beta"] == 0.1
    with (tmp_path / "step_metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["train_accuracy"]) == 0.0  # policy == reference at step 1
    assert float(rows[-1]["train_accuracy"]) == 1.0
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_lora_on_a_local_model_and_resume(models_dir: Path, data: Path, tmp_path: Path) -> None:
    local = tmp_path / "my-model"
    shutil.copytree(models_dir / BASE_MODEL, local)
    spec = make_spec(
        models_dir, data, tmp_path / "job", model=f"local:{local}", learning_rate_multiplier=50.0
    )
    assert run(spec, control=StopAt(spec.output_dir, 2, "pause")).status == "paused"
    assert (spec.output_dir / "checkpoints" / "step-2" / "adapter_config.json").is_file()
    outcome = run(dataclasses.replace(spec, resume=True), control=Control(spec.output_dir))
    assert outcome.status == "succeeded"
    curve = losses(spec.output_dir)
    assert curve[-1] < curve[0]
    model, _ = load_for_inference(spec.output_dir / "model", "cpu")  # merged: a plain Llama
    assert not any("lora" in name for name, _ in model.named_parameters())
    ckpt, _ = load_for_inference(spec.output_dir / "checkpoints" / "step-3", "cpu")
    assert ckpt.config.vocab_size == 264


def test_bad_data_and_bad_model_fail_with_the_error(models_dir: Path, data: Path, tmp_path: Path) -> None:
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [*sft_lines(4), {"messages": [{"role": "user", "content": "x"}]}]
    )
    outcome = run(
        make_spec(models_dir, data, tmp_path / "a", training_file=bad), control=Control(tmp_path / "a")
    )
    assert outcome.status == "failed"
    assert outcome.to_json()["error"] == {
        "code": "invalid_training_file",
        "message": "Line 5: 'messages' has no assistant message",
        "param": "training_file",
        "line": 5,
    }
    assert read_jsonl(tmp_path / "a" / "events.jsonl")[-1]["level"] == "error"
    outcome = run(make_spec(models_dir, data, tmp_path / "b", model="gpt-x"), control=Control(tmp_path / "b"))
    assert outcome.error is not None and outcome.error.param == "model"


def test_auto_hyperparameters() -> None:
    spec = TrainSpec("j", BASE_MODEL, Path("m"), Path("t"), None, Path("o"))
    assert resolve_hyperparameters(spec, DataReport(12, 0)) == resolve_hyperparameters(
        spec, DataReport(12, 99)
    )
    small = resolve_hyperparameters(spec, DataReport(12, 0))
    assert (small.n_epochs, small.batch_size, small.learning_rate_multiplier, small.beta) == (8, 1, 1.0, 0.1)
    assert resolve_hyperparameters(spec, DataReport(1000, 0)).n_epochs == 3
    assert resolve_hyperparameters(spec, DataReport(5000, 0)).batch_size == 8
    assert resolve_hyperparameters(spec, DataReport(20_000, 0)).n_epochs == 1
    assert TrainSpec.from_json(json.dumps(spec.to_json())) == spec
    assert TrainSpec.from_json({**spec.to_json(), "n_epochs": None, "seed": None}).n_epochs == "auto"


def test_worker_in_process_writes_the_outcome_of_bad_data(
    data: Path, models_dir: Path, tmp_path: Path
) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{oops"])
    spec = make_spec(models_dir, data, tmp_path, training_file=bad)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_json()))
    assert worker.main([str(tmp_path)]) == 0
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["status"] == "failed"
    assert outcome["error"]["line"] == 1 and outcome["error"]["param"] == "training_file"
    assert worker.main([]) == 2


def test_worker_process_end_to_end(data: Path, models_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(models_dir, data, tmp_path, n_epochs=1)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_json()))
    env = {**os.environ, "TUNEGATE_TRAIN_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "tunegate.server.providers.local.worker", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["status"] == "succeeded" and outcome["model_dir"] == "model"
    assert outcome["step"] == 3 and outcome["trained_tokens"] > 0
    assert (tmp_path / "model" / "config.json").is_file()
