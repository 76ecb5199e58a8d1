"""Provider adapters: one module per provider behind the `Provider` interface (`interface`).

`ProviderSet` holds one instance of each adapter, created once at server start and closed when
it stops; each HTTP adapter owns one `HttpClient` (`_http`: a pooled `httpx.AsyncClient` with
timeouts, proxies from the environment, HTTP/2 and the retry policy), shared by every request
and account it serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import httpx
from tunegate.server.errors import InvalidArgument
from tunegate.server.providers._azure import AzureOpenAIProvider
from tunegate.server.providers._http import HttpSettings, Sleep, no_retries, retry_after_seconds
from tunegate.server.providers._openai import TAG_KEY, OpenAIProvider
from tunegate.server.providers.bedrock import BedrockProvider, BedrockSettings
from tunegate.server.providers.fireworks import FireworksProvider
from tunegate.server.providers.interface import (
    Account,
    Capability,
    JobObject,
    Page,
    Provider,
    ProviderDownload,
    ProviderFile,
    unsupported,
)
from tunegate.server.providers.local import LocalProvider, LocalSettings, SchedulerSettings
from tunegate.server.providers.vertex import VertexProvider

__all__ = [
    "TAG_KEY",
    "Account",
    "AzureOpenAIProvider",
    "BedrockProvider",
    "BedrockSettings",
    "Capability",
    "FireworksProvider",
    "HttpSettings",
    "JobObject",
    "LocalProvider",
    "LocalSettings",
    "OpenAIProvider",
    "Page",
    "Provider",
    "ProviderDownload",
    "ProviderFile",
    "ProviderSet",
    "SchedulerSettings",
    "VertexProvider",
    "capabilities_for",
    "no_retries",
    "retry_after_seconds",
    "unsupported",
]


def capabilities_for(provider: Provider, account: Account) -> frozenset[Capability]:
    """What `provider` can do for `account`: `provider.capabilities_for(account)` where the
    adapter's capabilities depend on the account (Azure's api-version), else `capabilities`."""
    method = getattr(provider, "capabilities_for", None)
    if callable(method):
        result = method(account)
        assert isinstance(result, frozenset)
        return result
    return provider.capabilities


class ProviderSet:
    """The adapters by routing name (`x-portkey-provider`)."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._by_name: dict[str, Provider] = {}
        for provider in providers:
            if provider.name in self._by_name:
                raise ValueError(f"two providers named {provider.name!r}")
            self._by_name[provider.name] = provider

    @classmethod
    def default(
        cls,
        settings: HttpSettings | Mapping[str, HttpSettings] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        jitter: Callable[[], float] | None = None,
        local: LocalProvider | None = None,
        bedrock: BedrockSettings | None = None,
        fireworks_multipart_limit: int | None = None,
    ) -> ProviderSet:
        """Every adapter built into the gateway (OpenAI, Azure OpenAI, Vertex AI, Bedrock with
        `bedrock`'s upload settings, Fireworks AI with `fireworks_multipart_limit`, the largest
        file it sends to a dataset in one request), plus `local` (the on-machine trainer, which
        needs its data directory) when given.

        `settings` is one `HttpSettings` for every adapter, or one per routing name (a name it
        lacks gets the defaults). `transport`, `sleep` and `jitter` are for tests (see
        `HttpClient`)."""

        def settings_of(name: str) -> HttpSettings | None:
            if settings is None or isinstance(settings, HttpSettings):
                return settings
            return settings.get(name)

        providers: list[Provider] = [
            adapter(settings_of(adapter.name), transport=transport, sleep=sleep, jitter=jitter)
            for adapter in (OpenAIProvider, AzureOpenAIProvider, VertexProvider)
        ]
        limit = {} if fireworks_multipart_limit is None else {"multipart_limit": fireworks_multipart_limit}
        providers.append(
            FireworksProvider(
                settings_of(FireworksProvider.name), transport=transport, sleep=sleep, jitter=jitter, **limit
            )
        )
        providers.append(BedrockProvider(bedrock))
        if local is not None:
            providers.append(local)
        return cls(providers)

    def get(self, name: str) -> Provider:
        """The adapter called `name`; `InvalidArgument` (`unknown_provider`) when there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name))
            raise InvalidArgument(
                f"Unknown provider '{name}'. Known providers: {known}.",
                code="unknown_provider",
                param="x-portkey-provider",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_name))

    async def start(self) -> None:
        """Starts the adapters that have background work (`start()`: the local trainer's
        restart recovery and queue)."""
        for provider in self._by_name.values():
            start = getattr(provider, "start", None)
            if callable(start):
                await start()

    async def aclose(self) -> None:
        """Closes every adapter's connection pool and stops background work (each once, even
        if one fails)."""
        errors: list[BaseException] = []
        for provider in self._by_name.values():
            try:
                await provider.aclose()
            except Exception as exc:  # keep closing the others
                errors.append(exc)
        if errors:
            raise errors[0]
