"""The Vertex AI adapter: OpenAI's fine-tuning API on Gemini tuning jobs.

One account is one Google identity in one project and location (see `tunegate.server.routing`):
a service-account key file, from which access tokens are minted and cached per key file
(`_auth.Tokens`: refreshed only when google-auth says the token is no longer valid), or the
caller's own access token. The Vertex API lives at `https://{location}-aiplatform.googleapis.com`
(`aiplatform.googleapis.com` for `global`); GCS at `https://storage.googleapis.com`. When the
account's base URL is anything else (configuration or an allow-listed `x-portkey-custom-host`),
that one address serves the Vertex API and GCS alike, and a key file's token endpoint may be
`<that address>/token` — so one local fake can stand in for all of them.

A create (`Capability.STAGED_FILES`): `check_request` settles the method (supervised or
preference), the hyperparameters and the bucket before any cost; the registry stages each gateway
file through `stage_file` (converted by `_convert` while streaming into
`gs://<bucket>/tunegate/<file id>.<kind>.jsonl` with GCS's resumable protocol, once per (file,
kind, bucket)); `create_job` posts the `TuningJob` (`v1`, or `v1beta1` for a preference spec) with
the gateway id in its labels, which `find_job_by_tag` filters on. Jobs, events and checkpoints
read back through `_jobs`; chat goes to the tuned endpoint's `generateContent` (`_gemini`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.providers._chat import ChatClient
from tunegate.server.providers._http import Endpoint, HttpClient, HttpSettings, Sleep
from tunegate.server.providers.interface import (
    Account,
    Capability,
    ChatReply,
    JobObject,
    Page,
    ProviderDownload,
    ProviderFile,
    unsupported,
)
from tunegate.server.providers.vertex import _jobs
from tunegate.server.providers.vertex._auth import (
    DEFAULT_TOKEN_URIS,
    AccessToken,
    Tokens,
    parse_service_account,
)
from tunegate.server.providers.vertex._convert import Kind, aconvert_chunks, kind_for_method
from tunegate.server.providers.vertex._gcs import HEADER_BUCKET, upload_stream, validate_bucket
from tunegate.server.providers.vertex._gemini import gemini_chat
from tunegate.server.routing._config import VERTEX, VERTEX_DEFAULT_BASE_URL, VERTEX_GLOBAL_BASE_URL

__all__ = ["VertexProvider"]

_OPTION_KEYS = frozenset({"adapter_size", "export_last_checkpoint_only"})
"""The `provider_options` a Vertex create reads (routing's own keys are removed before)."""
STAGING_PREFIX = "tunegate/"
"""Where staged training data goes in the bucket."""


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: Kind
    bucket: str


def _seg(value: str) -> str:
    if not value or value in (".", ".."):
        raise NotFound("No such object at the provider.")
    return urllib.parse.quote(value, safe="")


class VertexProvider:
    """`Provider` (plus `StagingProvider` and chat) for Google Vertex AI."""

    name = VERTEX
    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.CREATE,
            Capability.RETRIEVE,
            Capability.LIST,
            Capability.LIST_FULL_JOBS,
            Capability.CANCEL,
            Capability.EVENTS,
            Capability.CHECKPOINTS,
            Capability.TAG_LOOKUP,
            Capability.STAGED_FILES,
            Capability.CHAT,
        }
    )
    pages_by_id = False

    def __init__(
        self,
        settings: HttpSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.http = HttpClient(self.name, settings, transport=transport, sleep=sleep, jitter=jitter)
        self.chat_http = ChatClient(self.http)
        self.tokens = Tokens()

    async def aclose(self) -> None:
        try:
            await self.chat_http.aclose()
        finally:
            await self.http.aclose()

    # -- access --------------------------------------------------------------------------------

    @staticmethod
    def _google_hosts(account: Account) -> bool:
        """Whether the account talks to Google's own hosts (else one custom address serves all)."""
        region = account.region or ""
        return account.base_url in (VERTEX_DEFAULT_BASE_URL.format(region=region), VERTEX_GLOBAL_BASE_URL)

    async def _token(self, account: Account) -> str:
        if account.options.get("auth") == "service_account":
            allowed = set(DEFAULT_TOKEN_URIS)
            if not self._google_hosts(account):
                allowed.add(f"{account.base_url}/token")
            info = parse_service_account(account.credential, token_uris=allowed)
            return await self.tokens.token(info)
        return await self.tokens.token(AccessToken(account.credential))

    async def _endpoint(self, account: Account) -> Endpoint:
        token = await self._token(account)
        return Endpoint(account.base_url.rstrip("/"), {"Authorization": f"Bearer {token}"}, {})

    @staticmethod
    def _jobs_path(account: Account, version: str = "v1") -> str:
        project = account.options.get("project_id", "")
        return f"/{version}/projects/{_seg(project)}/locations/{_seg(account.region or '')}/tuningJobs"

    # -- planning ------------------------------------------------------------------------------

    def _plan(self, account: Account, request: Mapping[str, Any]) -> _Plan:
        unknown = sorted(set(request.get("provider_options") or {}) - _OPTION_KEYS)
        if unknown:
            raise InvalidArgument(
                f"provider_options.{unknown[0]} is not a Vertex AI setting "
                f"(known: {', '.join(sorted(_OPTION_KEYS))}).",
                code="invalid_value",
                param=f"provider_options.{unknown[0]}",
            )
        method = (request.get("method") or {}).get("type") or "supervised"
        kind = kind_for_method(method)
        bucket = account.options.get("storage_bucket")
        if not bucket:
            raise InvalidArgument(
                "Vertex AI needs a GCS bucket for training data (x-portkey-vertex-storage-bucket-name).",
                code="missing_provider_option",
                param=HEADER_BUCKET,
            )
        validate_bucket(bucket)
        return _Plan(kind, bucket)

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        plan = self._plan(account, request)
        _jobs.hyperparameters_for(request, method=plan.kind)

    # -- staging -------------------------------------------------------------------------------

    def staging_key(self, account: Account, request: Mapping[str, Any]) -> str:
        plan = self._plan(account, request)
        return f"vertex:{plan.kind}:gs://{plan.bucket}/{STAGING_PREFIX}"

    async def stage_file(
        self,
        account: Account,
        request: Mapping[str, Any],
        *,
        file_id: str,
        filename: str,
        size: int,
        chunks: AsyncIterator[bytes],
        param: str,
    ) -> ProviderFile:
        plan = self._plan(account, request)

        async def token() -> str:
            return await self._token(account)

        uri, _size = await upload_stream(
            bucket=plan.bucket,
            name=f"{STAGING_PREFIX}{file_id}.{plan.kind}.jsonl",
            chunks=aconvert_chunks(chunks, plan.kind, param=param),
            token=token,
            endpoint=None if self._google_hosts(account) else account.base_url,
        )
        return ProviderFile(id=uri, status="processed")

    # -- files (Vertex reads GCS: see staging) -------------------------------------------------

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        raise unsupported(self.name, "file uploads (files are converted and staged per job)")

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        raise unsupported(self.name, "provider files")

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        raise unsupported(self.name, "result files")

    # -- jobs ----------------------------------------------------------------------------------

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        plan = self._plan(account, request)
        training = _gs_uri(request.get("training_file"), "training_file")
        validation = request.get("validation_file")
        body, version = _jobs.create_body(
            request=request,
            base_model=str(request.get("model") or ""),
            tag=tag,
            training_uri=training,
            validation_uri=_gs_uri(validation, "validation_file") if validation else None,
            method=plan.kind,
            display_name_suffix=request.get("suffix"),
            provider_options=request.get("provider_options") or {},
        )
        job = await self.http.request_json(
            "POST", await self._endpoint(account), self._jobs_path(account, version), json=body
        )
        return _jobs.job_from_vertex(job)

    async def find_job_by_tag(self, account: Account, tag: str, *, created_after: int) -> JobObject | None:
        params = _jobs.list_params(50, None)
        params["filter"] = f'labels.{_jobs.TAG_LABEL}="{_jobs.tag_label(tag)}"'
        answer = await self.http.request_json(
            "GET", await self._endpoint(account), self._jobs_path(account), params=params
        )
        jobs, _token = _jobs.page_from_vertex(answer)
        for job in jobs:
            if _jobs.tag_from_labels(job.get("labels") or {}) == tag:
                return _jobs.job_from_vertex(job)
        return None

    async def _get(self, account: Account, job_id: str) -> dict[str, Any]:
        path = f"{self._jobs_path(account)}/{_seg(job_id)}"
        return await self.http.request_json("GET", await self._endpoint(account), path)

    async def get_job(self, account: Account, job_id: str) -> JobObject:
        return _jobs.job_from_vertex(await self._get(account, job_id))

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page:
        answer = await self.http.request_json(
            "GET",
            await self._endpoint(account),
            self._jobs_path(account),
            params=_jobs.list_params(limit, page_token),
        )
        jobs, token = _jobs.page_from_vertex(answer)
        data = [_jobs.job_from_vertex(job) for job in jobs]
        return Page(data, bool(token and data), token if data else None)

    async def cancel_job(self, account: Account, job_id: str) -> JobObject:
        path = f"{self._jobs_path(account)}/{_seg(job_id)}:cancel"
        await self.http.request_json("POST", await self._endpoint(account), path, json={})
        return await self.get_job(account, job_id)

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        raise unsupported(self.name, "pausing jobs")

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        raise unsupported(self.name, "resuming jobs")

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        return Page.sliced(_jobs.events_from_vertex(await self._get(account, job_id)), limit, page_token)

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        return Page.sliced(_jobs.checkpoints_from_vertex(await self._get(account, job_id)), limit, page_token)

    # -- chat ----------------------------------------------------------------------------------

    async def chat(self, account: Account, body: bytes, *, model: str, stream: bool) -> ChatReply:
        """`generateContent` / `streamGenerateContent` on `model`: a tuned model's endpoint
        (`projects/…/locations/…/endpoints/…`, what `fine_tuned_model` names) or a model resource."""
        try:
            return await gemini_chat(
                self.chat_http, await self._endpoint(account), body, resource=model, stream=stream
            )
        except ValueError as exc:
            raise InvalidArgument(
                f"'{model}' is not a Vertex AI endpoint or model resource name "
                "(projects/<project>/locations/<location>/endpoints/<id>).",
                code="model_not_found",
                param="model",
            ) from exc


def _gs_uri(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.startswith("gs://"):
        raise InvalidArgument(
            f"'{param}' must be one of your files (file-…) or a gs:// URI for Vertex AI.",
            code="invalid_value",
            param=param,
        )
    return value
