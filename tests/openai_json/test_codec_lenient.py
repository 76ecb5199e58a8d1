"""`from_openai(..., lenient=True)`: provider answers gain fields; they are dropped, not fatal."""

from __future__ import annotations

import pytest
from tunegate.openai_json import CodecError, from_openai, to_openai
from tunegate.v1 import fine_tuning_pb2 as ft

_JOB = {
    "object": "fine_tuning.job",
    "id": "ftjob-1",
    "model": "gpt-4o-mini",
    "status": "running",
    "usage_metrics": {"tokens": 3},  # unknown at the top
    "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "warmup": 1},  # unknown nested
    "integrations": [{"type": "wandb", "wandb": {"project": "p", "colour": "red"}}],  # in a list
    "metadata": {"team": "x"},
}


def test_lenient_drops_unknown_keys_at_every_depth() -> None:
    job = from_openai(_JOB, ft.FineTuningJob, lenient=True)
    rendered = to_openai(job)
    assert "usage_metrics" not in rendered
    assert rendered["hyperparameters"] == {"n_epochs": 3, "batch_size": "auto"}
    (integration,) = rendered["integrations"]
    assert integration["wandb"]["project"] == "p" and "colour" not in integration["wandb"]
    assert rendered["metadata"] == {"team": "x"} and rendered["status"] == "running"


def test_strict_names_the_first_unknown_key_and_lenient_still_checks_types() -> None:
    with pytest.raises(CodecError) as strict:
        from_openai(_JOB, ft.FineTuningJob)
    assert strict.value.param == "usage_metrics"
    with pytest.raises(CodecError) as typed:
        from_openai({**_JOB, "created_at": "yesterday"}, ft.FineTuningJob, lenient=True)
    assert typed.value.param == "created_at"
