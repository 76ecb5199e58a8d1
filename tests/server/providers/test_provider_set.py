"""`ProviderSet`: lookup by routing name, the unknown-provider error, closing."""

from __future__ import annotations

import httpx
import pytest
from tunegate.server.errors import InvalidArgument
from tunegate.server.providers import (
    AzureOpenAIProvider,
    BedrockProvider,
    HttpSettings,
    OpenAIProvider,
    ProviderSet,
)

from .support import Upstream, openai_account, openai_job


async def test_lookup_and_close() -> None:
    upstream = Upstream().on("GET", "/v1/fine_tuning/jobs/ftjob-abc", httpx.Response(200, json=openai_job()))
    providers = ProviderSet.default()
    assert (
        list(providers) == ["azure-openai", "bedrock", "fireworks-ai", "openai", "vertex-ai"]
        and "openai" in providers
    )
    assert isinstance(providers.get("bedrock"), BedrockProvider)
    assert isinstance(providers.get("openai"), OpenAIProvider)
    assert isinstance(providers.get("azure-openai"), AzureOpenAIProvider)
    assert providers.get("openai") is providers.get("openai")  # one shared instance (and pool)
    job = await providers.get("openai").get_job(openai_account(upstream), "ftjob-abc")
    assert job["id"] == "ftjob-abc"
    await providers.aclose()


def test_unknown_provider() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ProviderSet.default().get("bedrock-typo")
    err = caught.value
    assert (err.code, err.param) == ("unknown_provider", "x-portkey-provider")
    assert "openai" in err.message


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="two providers"):
        ProviderSet([OpenAIProvider(), OpenAIProvider()])


async def test_http_settings_per_provider() -> None:
    short = HttpSettings(timeout_seconds=5, max_retries=0)
    providers = ProviderSet.default({"openai": short})
    openai, azure = providers.get("openai"), providers.get("azure-openai")
    assert isinstance(openai, OpenAIProvider) and isinstance(azure, AzureOpenAIProvider)
    assert openai.http.settings is short and azure.http.settings == HttpSettings()
    assert openai.http.client.timeout.read == 5
    await providers.aclose()
    assert openai.http.client.is_closed and azure.http.client.is_closed
