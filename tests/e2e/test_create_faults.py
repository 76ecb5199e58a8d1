"""Creates against a provider that cannot be reached or answers too late, with the official
`openai` SDK and its default retries: no stuck job, no doubled job, reads that do not wait."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from tunegate.server.routing import ProviderSettings

from tests.conftest import start_gateway
from tests.e2e.providers import routing_for, write_training
from tests.e2e.sdk import openai_client
from tests.fakes import FakeOpenAI, start_fake_azure_in_thread, start_fake_openai_in_thread

MODEL = "gpt-4o-mini-2024-07-18"
READ_TIMEOUT = 0.5  # the gateway's read timeout for the fake OpenAI
LATE = 1.5  # how long the slow fake takes to create a job: past the gateway's timeout


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = start_fake_openai_in_thread(steps_per_get=0)
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def base_url(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    azure = start_fake_azure_in_thread()
    routing = routing_for(upstream, azure, allowed_custom_hosts=("127.0.0.1",))
    providers = dict(routing.providers)
    providers["openai"] = ProviderSettings(base_url=upstream.base_url, timeout_seconds=READ_TIMEOUT)
    routing = dataclasses.replace(routing, providers=providers)
    gateway = start_gateway(tmp_path_factory.mktemp("faults"), routing=routing, reconcile_grace_seconds=0.0)
    yield gateway.base_url
    gateway.close()
    azure.close()


@pytest.fixture
def client(base_url: str, api_key: str) -> openai.OpenAI:
    """The SDK as a user has it: default retries."""
    return openai_client(base_url, api_key, default_headers={"x-portkey-provider": "openai"})


def tagged(upstream: FakeOpenAI, gateway_id: str) -> list[Any]:
    return [j for j in upstream.jobs.values() if (j.metadata or {}).get("tunegate_job_id") == gateway_id]


def test_a_provider_that_cannot_be_reached_leaves_no_job(base_url: str, api_key: str, tmp_path: Path) -> None:
    unreachable = openai_client(
        base_url,
        api_key,
        max_retries=0,
        default_headers={
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://127.0.0.1:{closed_port()}/v1",
        },
    )
    case = {"case": "unreachable-" + tmp_path.name}
    with pytest.raises(openai.InternalServerError) as err:
        unreachable.fine_tuning.jobs.create(model=MODEL, training_file="file-abc", metadata=case)
    assert err.value.status_code == 502 and err.value.response.headers["x-should-retry"] == "true"
    registry = openai_client(base_url, api_key, max_retries=0)  # no provider named: the registry
    assert list(registry.fine_tuning.jobs.list(metadata=case)) == []  # nothing stuck
    assert err.value.code == "provider_unreachable"


def test_a_create_answered_too_late_is_one_job(
    upstream: FakeOpenAI, client: openai.OpenAI, tmp_path: Path
) -> None:
    case = {"case": "late-" + tmp_path.name}
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    before = len(upstream.jobs)
    upstream.inject("slow", r"/v1/fine_tuning/jobs$", method="POST", times=3, delay=LATE)
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id, metadata=case)
    assert job.status == "validating_files"  # the intent: an answer the SDK does not retry
    deadline = time.monotonic() + 10
    while len(upstream.jobs) == before and time.monotonic() < deadline:
        time.sleep(0.05)  # the provider is still making the job
    upstream.call(upstream.faults.clear)
    (native,) = tagged(upstream, job.id)
    assert len(upstream.jobs) == before + 1
    upstream.advance(native.id, to="running")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # found by its tag
    assert [j.id for j in client.fine_tuning.jobs.list(metadata=case)] == [job.id]
    assert upstream.violations == []


def test_a_cancel_of_an_unconfirmed_job_is_carried_out_once_it_is_found(
    upstream: FakeOpenAI, client: openai.OpenAI, tmp_path: Path
) -> None:
    training = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
    before = len(upstream.jobs)
    upstream.inject("slow", r"/v1/fine_tuning/jobs$", method="POST", times=1, delay=LATE)
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id)
    assert job.status == "validating_files"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # accepted, kept
    deadline = time.monotonic() + 10
    while len(upstream.jobs) == before and time.monotonic() < deadline:
        time.sleep(0.05)  # the provider is still making the job
    (native,) = tagged(upstream, job.id)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"  # found, then cancelled
    assert upstream.jobs[native.id].status == "cancelled"
    assert upstream.violations == []
