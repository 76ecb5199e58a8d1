"""Fine-tuning jobs on Azure OpenAI (the v1 API and the dated 2024-10-21 API) through the gateway,
against a fake Azure that enforces each surface's own rules."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.e2e.providers import ProviderStack, stack, write_training
from tests.e2e.sdk import openai_client

__all__ = ["stack"]


@pytest.fixture(autouse=True)
def no_violations(stack: ProviderStack):
    yield
    assert stack.azure.violations == []


def azure_client(stack: ProviderStack, api_key: str, **headers: str) -> openai.OpenAI:
    default = {
        "x-portkey-provider": "azure-openai",
        "x-portkey-azure-resource-name": "tunegate-test",
        "api-key": api_key,
        **headers,
    }
    return openai_client(stack.gateway.base_url, api_key, max_retries=0, default_headers=default)


@pytest.mark.parametrize("api_version", ["v1", "2024-10-21"])
def test_lifecycle(stack: ProviderStack, api_key: str, tmp_path: Path, api_version: str) -> None:
    client = azure_client(stack, api_key, **{"x-portkey-azure-api-version": api_version})
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=training.id,
        suffix="azure-run",
        hyperparameters={"n_epochs": 2, "batch_size": "auto"},  # "auto" is omitted on the dated API
    )
    assert job.id.startswith("ftjob-") and job.training_file == training.id
    assert job.status in ("validating_files", "queued", "running")
    for _ in range(12):
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status == "succeeded":
            break
    assert job.status == "succeeded"
    assert job.organization_id  # `organisation_id` on the dated API, renamed
    events = list(client.fine_tuning.jobs.list_events(job.id))
    assert events and {e.level for e in events} <= {"info", "warn", "error"}  # `warning` → `warn`
    assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) is not None


def test_dated_api_refuses_what_it_cannot_do_before_any_cost(
    stack: ProviderStack, api_key: str, tmp_path: Path
) -> None:
    client = azure_client(stack, api_key, **{"x-portkey-azure-api-version": "2024-10-21"})
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    creates = len(stack.azure.requests_to("POST", r".*/fine_tuning/jobs$"))
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=training.id, suffix="x" * 41
        )
    assert err.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file=training.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        )
    assert err.value.param == "method"
    assert len(stack.azure.requests_to("POST", r".*/fine_tuning/jobs$")) == creates
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=training.id)
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.pause(job.id)
    assert err.value.code == "unsupported_by_provider"  # never mapped to cancel
    assert client.fine_tuning.jobs.retrieve(job.id).status != "cancelled"
