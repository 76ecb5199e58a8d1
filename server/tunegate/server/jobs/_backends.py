"""Which provider account serves a job call: the interfaces the registry needs from routing and
the provider set, and the rule for reaching the backend that owns an existing job."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tunegate.server.errors import InvalidArgument, Unauthenticated
from tunegate.server.providers.interface import Account, Capability, JobObject, Provider, unsupported
from tunegate.server.store import JobRecord

__all__ = ["AccountRouter", "Backend", "Backends", "ProviderLookup", "capabilities", "missing_credentials"]


class AccountRouter(Protocol):
    """What the registry needs of `tunegate.server.routing.Router`."""

    def resolve(
        self,
        metadata: Mapping[str, str],
        body_options: Mapping[str, Any] | None = None,
        *,
        provider_hint: str | None = None,
        body_param: str = "provider_options",
    ) -> Account | None: ...

    def account_for(self, account_key: str) -> Account | None: ...


class ProviderLookup(Protocol):
    """What the registry needs of `tunegate.server.providers.ProviderSet`."""

    def get(self, name: str) -> Provider: ...


def capabilities(provider: Provider, account: Account | None) -> frozenset[Capability]:
    """The provider's capabilities for `account` (Azure's depend on its api-version)."""
    method = getattr(provider, "capabilities_for", None)
    if account is not None and callable(method):
        result = method(account)
        if isinstance(result, frozenset):
            return result
    return provider.capabilities


@dataclass(frozen=True, slots=True)
class Backend:
    """A provider adapter and the account to call it as."""

    provider: Provider
    account: Account

    def can(self, capability: Capability) -> bool:
        return capability in capabilities(self.provider, self.account)

    def require(self, capability: Capability, operation: str) -> None:
        """Raises `Unsupported` (never falls back to another operation)."""
        if not self.can(capability):
            raise unsupported(self.provider.name, operation)

    async def find_by_tag(
        self, tag: str, *, created_after: int, request: Mapping[str, Any] | None = None
    ) -> JobObject | None:
        """The job tagged `tag`, if the adapter can look jobs up by tag; else None. `request`
        (the native create body) is passed to adapters that accept it as a fallback matcher."""
        if not self.can(Capability.TAG_LOOKUP):
            return None
        finder = self.provider.find_job_by_tag
        if request is not None and "request" in inspect.signature(finder).parameters:
            extended: Any = finder
            found: JobObject | None = await extended(
                self.account, tag, created_after=created_after, request=request
            )
            return found
        return await finder(self.account, tag, created_after=created_after)


class Backends:
    """Resolves backends for new requests and for jobs already in the registry."""

    def __init__(
        self, router: AccountRouter, providers: ProviderLookup, *, default_provider: str | None = None
    ) -> None:
        self.router = router
        self.providers = providers
        self.default_provider = default_provider
        """The provider a create uses when the call names none (None: `missing_provider`)."""

    def for_request(
        self, metadata: Mapping[str, str], body_options: Mapping[str, Any] | None = None, *, body_param: str
    ) -> Backend | None:
        """The backend a call names, or None when it names no provider (and there is no default)."""
        account = self.router.resolve(metadata, body_options, body_param=body_param)
        if account is None and self.default_provider is not None:
            account = self.router.resolve(
                metadata, body_options, provider_hint=self.default_provider, body_param=body_param
            )
        return None if account is None else Backend(self.providers.get(account.provider), account)

    def for_create(
        self, metadata: Mapping[str, str], body_options: Mapping[str, Any] | None, *, body_param: str
    ) -> Backend:
        backend = self.for_request(metadata, body_options, body_param=body_param)
        if backend is None:
            raise InvalidArgument(
                "No provider given: send 'x-portkey-provider' (with the provider's credentials) "
                "or 'x-portkey-virtual-key'.",
                code="missing_provider",
                param="x-portkey-provider",
            )
        return backend

    def for_job(self, record: JobRecord, metadata: Mapping[str, str] | None) -> Backend | None:
        """The backend owning `record`: the call's own credentials when they resolve to the job's
        account, else the stored account (virtual keys), else None (no usable credential)."""
        account: Account | None = None
        if metadata is not None:
            resolved = self.router.resolve(metadata, provider_hint=record.provider)
            if resolved is not None and resolved.key == record.account_key:
                account = resolved
        if account is None:
            account = self.router.account_for(record.account_key)
        if account is None:
            return None
        return Backend(self.providers.get(record.provider), account)


def missing_credentials(record: JobRecord, operation: str) -> Unauthenticated:
    """The error for a mutation on a job whose per-request credential this call lacks."""
    return Unauthenticated(
        f"Cannot {operation} job {record.id}: it runs on '{record.provider}' with per-request "
        f"credentials. Send the same {record.provider} credential ('Authorization: Bearer <key>' "
        "with 'x-portkey-provider') that created it.",
        code="missing_credentials",
    )
