"""`GET /v1/models` and `GET /v1/models/{model}`: the models a caller can call.

Routing is the call's metadata (`Router.resolve`). With no provider named — or the `local`
provider named — the gateway answers itself: the local provider's base models (`owned_by:
"tunegate"`) and the caller's own fine-tuned models, i.e. the `ft:` models of the caller's
succeeded local jobs (owner-scoped through the job registry; the local provider says which of
them succeeded, so a job nobody has polled since it finished is listed too). Another caller's
model is not found, exactly like a model that does not exist, and the 404 says it is the
gateway's answer and which header reaches a provider's models.

With another provider named, its adapter answers (`ChatProvider.list_models` / `get_model`,
capability `MODELS`) for the resolved account; an adapter without `MODELS` is 400
`unsupported_by_provider`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from tunegate.server.errors import InvalidArgument, gateway_model_not_found
from tunegate.server.jobs import AccountRouter, Backend, ProviderLookup
from tunegate.server.providers.interface import Capability, ChatProvider, JobObject
from tunegate.v1 import models_pb2

__all__ = ["LocalModels", "ModelService", "OwnedJobs", "gateway_model_not_found"]

LOCAL = "local"


class LocalModels(Protocol):
    """What the model service needs of `LocalProvider`."""

    name: str

    def base_models(self) -> list[JobObject]: ...

    async def fine_tuned_model(self, job_id: str) -> JobObject | None: ...

    async def model_dir(self, fine_tuned_model: str) -> tuple[str, Path] | None: ...


class OwnedJobs(Protocol):
    """What the model service needs of `JobService`."""

    async def owned_native_ids(self, owner: str, provider: str) -> tuple[str, ...]: ...

    async def owned_native_job(self, owner: str, provider: str, native_id: str) -> str | None: ...


def model_message(body: Mapping[str, Any]) -> models_pb2.Model:
    """An OpenAI `model` object (a provider's, whatever else it carries) as the contract's
    `Model`: `id`, `created` (Unix seconds; `created_at` when a provider names it so) and
    `owned_by`."""
    created = body.get("created")
    if created is None:
        created = body.get("created_at")
    return models_pb2.Model(
        id=str(body.get("id") or ""),
        created=int(created) if isinstance(created, int | float) else 0,
        owned_by=str(body.get("owned_by") or ""),
    )


class ModelService:
    """Owner-scoped model listing (see the module docstring)."""

    def __init__(
        self,
        router: AccountRouter,
        providers: ProviderLookup,
        local: LocalModels | None,
        jobs: OwnedJobs,
    ) -> None:
        self._router = router
        self._providers = providers
        self._local = local
        self._jobs = jobs

    async def list_models(self, owner: str, *, metadata: Mapping[str, str]) -> models_pb2.ListModelsResponse:
        backend = self._provider_backend(metadata, "listing models")
        if backend is not None:
            models = await cast(ChatProvider, backend.provider).list_models(backend.account)
            return models_pb2.ListModelsResponse(data=[model_message(m) for m in models])
        return models_pb2.ListModelsResponse(data=[model_message(m) for m in await self._local_models(owner)])

    async def get_model(self, owner: str, model: str, *, metadata: Mapping[str, str]) -> models_pb2.Model:
        if not model:
            raise InvalidArgument(
                "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
            )
        backend = self._provider_backend(metadata, "retrieving models")
        if backend is not None:
            return model_message(await cast(ChatProvider, backend.provider).get_model(backend.account, model))
        found = await self._local_model(owner, model)
        if found is None:
            raise gateway_model_not_found(model)
        return model_message(found)

    # -- routing ------------------------------------------------------------------------------

    def _provider_backend(self, metadata: Mapping[str, str], operation: str) -> Backend | None:
        """The named provider's backend (checked for `MODELS`), or None for the gateway's own
        models (no provider named, or `local`)."""
        account = self._router.resolve(metadata)
        if account is None or account.provider == LOCAL:
            return None
        backend = Backend(self._providers.get(account.provider), account)
        backend.require(Capability.MODELS, operation)
        return backend

    # -- the gateway's own models -------------------------------------------------------------

    async def _local_models(self, owner: str) -> list[JobObject]:
        if self._local is None:
            return []
        models = list(self._local.base_models())
        for native_id in await self._jobs.owned_native_ids(owner, self._local.name):
            tuned = await self._local.fine_tuned_model(native_id)
            if tuned is not None:
                models.append(tuned)
        return models

    async def _local_model(self, owner: str, model: str) -> JobObject | None:
        if self._local is None:
            return None
        for base in self._local.base_models():
            if base["id"] == model:
                return base
        found = await self._local.model_dir(model)
        if found is None:
            return None
        native_id = found[0]
        if await self._jobs.owned_native_job(owner, self._local.name, native_id) is None:
            return None  # another owner's model: indistinguishable from none
        return await self._local.fine_tuned_model(native_id)
