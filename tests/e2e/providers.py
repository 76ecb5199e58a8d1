"""A gateway wired to the fake OpenAI and Azure upstreams, for the jobs end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, RoutingConfig, VirtualKey

from tests.conftest import Gateway, start_gateway
from tests.fakes import FakeAzureOpenAI, FakeOpenAI, start_fake_azure_in_thread, start_fake_openai_in_thread

TRAINING = b"".join(
    b'{"messages": [{"role": "user", "content": "q%d"}, {"role": "assistant", "content": "a%d"}]}\n' % (i, i)
    for i in range(12)
)


@dataclass
class ProviderStack:
    """A gateway whose `openai` and `azure-openai` providers are the loopback fakes."""

    gateway: Gateway
    openai: FakeOpenAI
    azure: FakeAzureOpenAI


def routing_for(openai: FakeOpenAI, azure: FakeAzureOpenAI, **extra: Any) -> RoutingConfig:
    providers = dict(DEFAULT_PROVIDERS)
    providers["openai"] = ProviderSettings(base_url=openai.base_url, timeout_seconds=5.0, max_retries=2)
    providers["azure-openai"] = ProviderSettings(
        base_url=azure.base_url("{resource_name}"), timeout_seconds=5.0, max_retries=2
    )
    return RoutingConfig(providers=providers, **extra)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderStack]:
    os.environ["TG_TEST_VK"] = "sk-virtual-team-key"  # the virtual key's secret, read at call time
    openai = start_fake_openai_in_thread(steps_per_get=0)
    azure = start_fake_azure_in_thread(steps_per_get=1)  # files import, jobs progress, one step per GET
    routing = routing_for(
        openai,
        azure,
        virtual_keys={
            "team-openai": VirtualKey(name="team-openai", provider="openai", api_key_env="TG_TEST_VK")
        },
    )
    gateway = start_gateway(tmp_path_factory.mktemp("jobs"), routing=routing, reconcile_grace_seconds=0.0)
    yield ProviderStack(gateway=gateway, openai=openai, azure=azure)
    gateway.close()
    openai.close()
    azure.close()


def write_training(tmp_path: Path) -> Path:
    path = tmp_path / "dataset.jsonl"
    path.write_bytes(TRAINING)
    return path
