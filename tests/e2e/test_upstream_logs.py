"""An unreachable provider is an expected failure: one WARNING line per call, no traceback."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, RoutingConfig

from tests.conftest import Gateway, start_gateway
from tests.e2e.providers import write_training
from tests.e2e.sdk import openai_client

MODEL = "gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory, dead_port: int) -> Iterator[Gateway]:
    providers = dict(DEFAULT_PROVIDERS)
    providers["openai"] = ProviderSettings(
        base_url=f"http://127.0.0.1:{dead_port}/v1", timeout_seconds=5.0, max_retries=1
    )
    gateway = start_gateway(
        tmp_path_factory.mktemp("unreachable"), routing=RoutingConfig(providers=providers)
    )
    yield gateway
    gateway.close()


def _upstream_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("tunegate")]


def test_unreachable_provider_is_one_warning_per_call(
    unreachable: Gateway, api_key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = openai_client(
        unreachable.base_url, api_key, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )
    # Uploaded without naming a provider: no background copy runs while the calls are watched.
    uploader = openai_client(unreachable.base_url, api_key, max_retries=0)
    training = uploader.files.create(file=write_training(tmp_path), purpose="fine-tune")
    calls: list[Callable[[], object]] = [
        lambda: client.fine_tuning.jobs.create(model=MODEL, training_file=training.id),
        lambda: client.fine_tuning.jobs.retrieve("ftjob-nativeAtTheProvider"),
    ]
    for call in calls:
        caplog.clear()
        with caplog.at_level(logging.INFO), pytest.raises(openai.APIStatusError) as err:
            call()
        assert err.value.status_code == 502
        request_id = err.value.response.headers["x-request-id"]
        records = _upstream_records(caplog)
        assert len(records) == 1, [r.getMessage() for r in records]
        (record,) = records
        assert record.levelno == logging.WARNING
        line = record.getMessage()
        assert "openai" in line and request_id in line and "502" in line, line
        assert record.exc_info is None and "Traceback" not in caplog.text, caplog.text


def test_a_background_copy_to_an_unreachable_provider_is_one_warning(
    unreachable: Gateway, api_key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = openai_client(
        unreachable.base_url, api_key, max_retries=0, default_headers={"x-portkey-provider": "openai"}
    )
    with caplog.at_level(logging.INFO):
        uploaded = client.files.create(file=write_training(tmp_path), purpose="fine-tune")
        deadline = time.monotonic() + 20
        while not _upstream_records(caplog) and time.monotonic() < deadline:
            time.sleep(0.05)  # the copy runs after the answer, in the background
    (record,) = _upstream_records(caplog)
    assert record.levelno == logging.WARNING and uploaded.id in record.getMessage()
    assert record.exc_info is None and "Traceback" not in caplog.text, caplog.text
