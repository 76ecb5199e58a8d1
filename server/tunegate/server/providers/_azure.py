"""The Azure OpenAI adapter: the `/openai/v1` surface and the dated (`api-version=YYYY-MM-DD`) one.

`account.base_url` is the resource's `…/openai` root (`https://<resource>.openai.azure.com/openai`);
`account.options["api_version"]` picks the surface:

- `v1` (the default) or `preview` → `{base}/v1/…`, OpenAI's own API (`api-version=preview` is
  sent only for `preview`). Handled exactly like OpenAI, except that its job list has no
  `metadata` filter, so `find_job_by_tag` scans the listing instead;
- a date (`2024-10-21`, `2025-04-01-preview`) → `{base}/…?api-version=<date>`, translated both
  ways by `tunegate.server.providers._azure_dated`. No pause/resume, no metadata (so no reliable tag
  lookup): `capabilities_for(account)` says so, and those calls raise `Unsupported`.

Auth: `api-key: <credential>`, or `Authorization: Bearer <credential>` when
`account.options["auth"] == "bearer"` (an Entra ID token).

Chat completions and models (a tuned model is called through its deployment):

- v1/preview: `POST {base}/v1/chat/completions`, the deployment named by the body's `model`
  (Azure's v1 API); `GET {base}/v1/models[/{model}]` as OpenAI's;
- dated: `POST {base}/deployments/{deployment}/chat/completions?api-version=<date>`, the
  deployment being `account.options["deployment_id"]` (`x-portkey-azure-deployment-id`), else the
  body's `model` (as `openai.AzureOpenAI` does without `azure_deployment`). Models: the
  deployment as the one model when the account names one, else the resource's
  `GET {base}/models?api-version=<date>` translated to OpenAI's `model` objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.providers import _azure_dated as dated
from tunegate.server.providers._http import Endpoint
from tunegate.server.providers._openai import OpenAIProvider, _seg
from tunegate.server.providers.interface import Account, Capability, JobObject, ProviderFile, unsupported

__all__ = ["AzureOpenAIProvider"]

_DATED_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_V1_VERSIONS = frozenset({"v1", "preview"})
_DEFAULT_API_VERSION = "v1"
_DATED_CAPABILITIES = frozenset(Capability) - {
    Capability.PAUSE,
    Capability.RESUME,
    Capability.TAG_LOOKUP,
    Capability.RESULT_FILES,
    Capability.STAGED_FILES,
}
_TAG_SEARCH_PAGE = 100
_TAG_SEARCH_MAX_PAGES = 50


def api_version(account: Account) -> str:
    """The account's api-version, validated (`InvalidArgument` names the Portkey header)."""
    version = account.options.get("api_version") or _DEFAULT_API_VERSION
    if version not in _V1_VERSIONS and not _DATED_VERSION.fullmatch(version):
        raise InvalidArgument(
            f"Unknown Azure OpenAI api-version '{version}': use v1, preview or a date such as 2024-10-21.",
            param="x-portkey-azure-api-version",
        )
    return version


def is_dated(account: Account) -> bool:
    return api_version(account) not in _V1_VERSIONS


class AzureOpenAIProvider(OpenAIProvider):
    """`Provider` for Azure OpenAI. The static `capabilities` are the v1 surface's (all); use
    `capabilities_for(account)` for what a given account's api-version supports."""

    name: str = "azure-openai"
    capabilities: frozenset[Capability] = frozenset(Capability) - {
        Capability.RESULT_FILES,
        Capability.STAGED_FILES,
    }
    filters_by_metadata: bool = False

    def capabilities_for(self, account: Account) -> frozenset[Capability]:
        return _DATED_CAPABILITIES if is_dated(account) else self.capabilities

    def endpoint(self, account: Account) -> Endpoint:
        version = api_version(account)
        if account.options.get("auth") == "bearer":
            headers = {"Authorization": f"Bearer {account.credential}"}
        else:
            headers = {"api-key": account.credential}
        base = account.base_url.rstrip("/")
        if version in _V1_VERSIONS:
            return Endpoint(base + "/v1", headers, {"api-version": version} if version == "preview" else {})
        return Endpoint(base, headers, {"api-version": version})

    def file_from_record(self, record: Mapping[str, Any]) -> ProviderFile:
        # Both surfaces report Azure's asynchronous import states (pending, running, …).
        return dated.file_to_provider_file(record)

    # -- jobs ----------------------------------------------------------------------------------

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        if is_dated(account):
            dated.check_request(request, api_version(account))
        else:
            super().check_request(account, request)

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        """v1: as OpenAI (tag in metadata). Dated: the translated body, no metadata, no tag."""
        if not is_dated(account):
            return await super().create_job(account, request, tag=tag)
        dated.check_request(request, api_version(account))
        body = dated.create_body(request)
        job = await self.http.request_json("POST", self.endpoint(account), "/fine_tuning/jobs", json=body)
        return dated.job_to_openai(job)

    async def find_job_by_tag(
        self, account: Account, tag: str, *, created_after: int, request: Mapping[str, Any] | None = None
    ) -> JobObject | None:
        """v1: the job whose metadata carries `tag`. Dated: the API keeps no tag, so this is a
        best effort — the oldest job created at or after `created_after` that `matches_request`
        the original create `request` (None without it)."""
        if not is_dated(account):
            return await super().find_job_by_tag(account, tag, created_after=created_after)
        if request is None:
            return None
        endpoint = self.endpoint(account)
        best: Mapping[str, Any] | None = None
        after: str | None = None
        for _ in range(_TAG_SEARCH_MAX_PAGES):
            page = await self._raw_page(endpoint, "/fine_tuning/jobs", _TAG_SEARCH_PAGE, after, {})
            for job in page.data:
                created = int(job.get("created_at") or 0)
                if created < created_after or not dated.matches_request(job, request):
                    continue
                if best is None or created < int(best.get("created_at") or 0):
                    best = job
            if not page.has_more or all(int(j.get("created_at") or 0) < created_after for j in page.data):
                break
            after = page.next_token
        return dated.job_to_openai(best) if best is not None else None

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        if is_dated(account):
            raise unsupported(self.name, f"pausing jobs with api-version {api_version(account)} (use v1)")
        return await super().pause_job(account, job_id)

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        if is_dated(account):
            raise unsupported(self.name, f"resuming jobs with api-version {api_version(account)} (use v1)")
        return await super().resume_job(account, job_id)

    # -- chat and models -----------------------------------------------------------------------

    def chat_target(self, account: Account, model: str) -> tuple[Endpoint, str]:
        if not is_dated(account):
            return super().chat_target(account, model)
        deployment = account.options.get("deployment_id") or model
        if not deployment:
            raise InvalidArgument(
                "Name the Azure OpenAI deployment to call (x-portkey-azure-deployment-id) or the model.",
                param="x-portkey-azure-deployment-id",
            )
        return self.endpoint(account), f"/deployments/{_seg(deployment)}/chat/completions"

    async def list_models(self, account: Account) -> list[JobObject]:
        if not is_dated(account):
            return await super().list_models(account)
        deployment = account.options.get("deployment_id")
        if deployment:
            return [_deployment_model(deployment)]
        body = await self.http.request_json("GET", self.endpoint(account), "/models")
        return [_dated_model(m) for m in body.get("data") or [] if isinstance(m, dict)]

    async def get_model(self, account: Account, model: str) -> JobObject:
        if not is_dated(account):
            return await super().get_model(account, model)
        deployment = account.options.get("deployment_id")
        if deployment:
            if model != deployment:
                raise NotFound(
                    f"The model '{model}' is not the Azure OpenAI deployment '{deployment}' this "
                    "request names (x-portkey-azure-deployment-id).",
                    code="model_not_found",
                    param="model",
                )
            return _deployment_model(deployment)
        found = await self.http.request_json("GET", self.endpoint(account), f"/models/{_seg(model)}")
        return _dated_model(found)

    # -- translation hooks ---------------------------------------------------------------------

    def job_from_provider(self, account: Account, job: JobObject) -> JobObject:
        return dated.job_to_openai(job) if is_dated(account) else super().job_from_provider(account, job)

    def event_from_provider(self, account: Account, event: JobObject) -> JobObject:
        return dated.event_to_openai(event) if is_dated(account) else event

    def checkpoint_from_provider(self, account: Account, checkpoint: JobObject) -> JobObject:
        return dated.checkpoint_to_openai(checkpoint) if is_dated(account) else checkpoint


def _deployment_model(deployment: str) -> JobObject:
    """A deployment as OpenAI's `model` object (its creation time is not known here: 0)."""
    return {"id": deployment, "object": "model", "created": 0, "owned_by": "azure-openai"}


def _dated_model(model: Mapping[str, Any]) -> JobObject:
    """A dated-API `Model` (`created_at`, `capabilities`, `lifecycle_status`, `fine_tune` …) as
    OpenAI's `model` object; a fine-tuned model is owned by the resource's organization."""
    return {
        "id": str(model.get("id") or ""),
        "object": "model",
        "created": int(model.get("created_at") or 0),
        "owned_by": "organization-owner" if model.get("fine_tune") or model.get("model") else "system",
    }
