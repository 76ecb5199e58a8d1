"""The OpenAI adapter: OpenAI's Files and Fine-tuning REST API, spoken natively.

Requests and answers are already OpenAI-shaped, so the translation is small:

- create: the gateway's own keys (`request_id`, `portkey_options`, `provider_options`) and
  `null`s are dropped, and the gateway's tag rides in `metadata["tunegate_job_id"]`; that key is
  reserved, so a request may carry at most 15 metadata pairs of its own;
- every job answer has the tag removed from `metadata` again (`metadata` becomes `null` when
  nothing else is left), so callers never see it;
- list pages keep OpenAI's cursor: the page token *is* the `after` id.

`OpenAIProvider` is also the base of the Azure adapter, whose `/openai/v1` surface is the same
API under another base URL and auth header (see `tunegate.server.providers._azure`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.providers._chat import ChatClient, relay_chat
from tunegate.server.providers._http import Endpoint, HttpClient, HttpSettings, Sleep
from tunegate.server.providers._multipart import MultipartFile
from tunegate.server.providers.interface import (
    Account,
    Capability,
    ChatReply,
    JobObject,
    Page,
    ProviderDownload,
    ProviderFile,
)

__all__ = ["GATEWAY_KEYS", "TAG_KEY", "OpenAIProvider", "create_body", "without_tag"]

TAG_KEY = "tunegate_job_id"
"""The metadata key that carries the gateway job id on the provider's job."""
GATEWAY_KEYS = frozenset({"request_id", "portkey_options", "provider_options"})
"""Create-body keys the gateway owns; never sent to a provider."""
_MAX_METADATA_PAIRS = 16
_TAG_SEARCH_PAGE = 100
DOWNLOAD_CHUNK_SIZE = 1024 * 1024
"""The largest chunk `download_file` yields (the blob store's write size)."""
_TAG_SEARCH_MAX_PAGES = 50  # bounds a crash-recovery search to 5 000 jobs of one account


def _drop_nulls(value: Any) -> Any:
    # OpenAI has refused explicit nulls on create (the legacy endpoint 400'd on `suffix: null`).
    if isinstance(value, Mapping):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def check_metadata_room(request: Mapping[str, Any]) -> None:
    """Raises `InvalidArgument` (param `metadata`) unless the tag fits beside the user's pairs."""
    metadata = request.get("metadata") or {}
    if TAG_KEY in metadata:
        raise InvalidArgument(f"The metadata key '{TAG_KEY}' is reserved by the gateway.", param="metadata")
    if len(metadata) >= _MAX_METADATA_PAIRS:
        raise InvalidArgument(
            f"metadata may have at most {_MAX_METADATA_PAIRS - 1} pairs here: the gateway reserves one "
            f"('{TAG_KEY}') to find the job at the provider again.",
            param="metadata",
        )


def create_body(request: Mapping[str, Any], *, tag: str) -> dict[str, Any]:
    """The OpenAI create body for `request`, with the tag in `metadata` (see module docstring)."""
    check_metadata_room(request)
    body: dict[str, Any] = _drop_nulls({k: v for k, v in request.items() if k not in GATEWAY_KEYS})
    body["metadata"] = {**(request.get("metadata") or {}), TAG_KEY: tag}
    return body


def without_tag(job: JobObject, *, keep_empty: bool = False) -> JobObject:
    """`job` with the gateway's tag removed from `metadata`; an emptied `metadata` becomes null
    unless `keep_empty` (the caller sent `{}` itself)."""
    metadata = job.get("metadata")
    if not isinstance(metadata, dict) or TAG_KEY not in metadata:
        return job
    rest = {k: v for k, v in metadata.items() if k != TAG_KEY}
    return {**job, "metadata": rest if rest or keep_empty else None}


def provider_file(record: Mapping[str, Any]) -> ProviderFile:
    """OpenAI's file object as a `ProviderFile` (OpenAI's statuses pass through)."""
    return ProviderFile(
        id=str(record["id"]),
        status=str(record.get("status") or "processed"),
        status_details=record.get("status_details"),
    )


class OpenAIProvider:
    """`Provider` for OpenAI (`https://api.openai.com/v1`, or any compatible `account.base_url`).

    Auth: `Authorization: Bearer <credential>`, plus `OpenAI-Organization` / `OpenAI-Project`
    from `account.options["organization"]` / `["project"]` when present. `settings`,
    `transport` and `sleep` configure the shared `HttpClient` (tests inject a
    `httpx.MockTransport` and a sleep recorder).
    """

    name: str = "openai"
    # `download_file` streams a file's content, but result files are not imported from OpenAI:
    # without `RESULT_FILES` they pass through under OpenAI's ids.
    capabilities: frozenset[Capability] = frozenset(Capability) - {
        Capability.RESULT_FILES,
        Capability.STAGED_FILES,
    }
    pages_by_id = True
    filters_by_metadata: bool = True
    """Whether `GET /fine_tuning/jobs` takes `metadata[k]=v` (OpenAI yes, Azure v1 no)."""

    def __init__(
        self,
        settings: HttpSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.http = HttpClient(self.name, settings, transport=transport, sleep=sleep, jitter=jitter)
        """The adapter's pooled control-plane client (files, jobs, models), shared by every
        account it serves."""
        self.chat_http = ChatClient(self.http)
        """The adapter's pooled chat relay client (aiohttp; see `_chat`), shared likewise."""

    def capabilities_for(self, account: Account) -> frozenset[Capability]:
        """What this adapter can do for `account` (for OpenAI: everything)."""
        return self.capabilities

    def endpoint(self, account: Account) -> Endpoint:
        headers = {"Authorization": f"Bearer {account.credential}"}
        for option, header in (("organization", "OpenAI-Organization"), ("project", "OpenAI-Project")):
            if account.options.get(option):
                headers[header] = account.options[option]
        return Endpoint(account.base_url.rstrip("/"), headers, {})

    async def aclose(self) -> None:
        try:
            await self.chat_http.aclose()
        finally:
            await self.http.aclose()

    # -- files ---------------------------------------------------------------------------------

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        body = MultipartFile(
            fields={"purpose": purpose}, file_field="file", filename=filename, size=size, chunks=chunks
        )
        record = await self.http.request_json(
            "POST", self.endpoint(account), "/files", content=body.stream(), headers=body.headers()
        )
        return self.file_from_record(record)

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        record = await self.http.request_json("GET", self.endpoint(account), f"/files/{_seg(file_id)}")
        return self.file_from_record(record)

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        """The file's name and purpose (`GET /files/{id}`), then its content streamed from
        `GET /files/{id}/content`: `chunks` yields it as it arrives, in flat memory."""
        endpoint = self.endpoint(account)
        path = f"/files/{_seg(file_id)}"
        record = await self.http.request_json("GET", endpoint, path)
        response = await self.http.open_stream("GET", endpoint, path + "/content")
        return ProviderDownload(
            filename=str(record.get("filename") or file_id),
            purpose=str(record.get("purpose") or "fine-tune-results"),
            content_type=response.headers.get("content-type") or "application/octet-stream",
            chunks=self.http.body_chunks(response, DOWNLOAD_CHUNK_SIZE),
        )

    def file_from_record(self, record: Mapping[str, Any]) -> ProviderFile:
        return provider_file(record)

    # -- jobs ----------------------------------------------------------------------------------

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        """Only the reserved metadata pair: OpenAI accepts everything the gateway's checks let by."""
        check_metadata_room(request)

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        body = create_body(request, tag=tag)
        job = await self.http.request_json("POST", self.endpoint(account), "/fine_tuning/jobs", json=body)
        return without_tag(job, keep_empty=request.get("metadata") == {})

    async def find_job_by_tag(
        self, account: Account, tag: str, *, created_after: int, request: Mapping[str, Any] | None = None
    ) -> JobObject | None:
        """Pages through the account's jobs (newest first; filtered by the tag where the API can)
        until one carries `tag` or a whole page predates `created_after`. `request` is unused
        here (it is the dated-Azure fallback's)."""
        params = {f"metadata[{TAG_KEY}]": tag} if self.filters_by_metadata else {}
        endpoint = self.endpoint(account)
        after: str | None = None
        for _ in range(_TAG_SEARCH_MAX_PAGES):
            page = await self._raw_page(endpoint, "/fine_tuning/jobs", _TAG_SEARCH_PAGE, after, params)
            for job in page.data:
                metadata = job.get("metadata") or {}
                if metadata.get(TAG_KEY) == tag and int(job.get("created_at") or 0) >= created_after:
                    return without_tag(job)
            # Jobs are listed newest first; a page wholly older than the intent ends the search.
            if not page.has_more or all(int(j.get("created_at") or 0) < created_after for j in page.data):
                return None
            after = page.next_token
        return None

    async def get_job(self, account: Account, job_id: str) -> JobObject:
        job = await self.http.request_json("GET", self.endpoint(account), f"/fine_tuning/jobs/{_seg(job_id)}")
        return self.job_from_provider(account, job)

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page:
        return await self._page(account, "/fine_tuning/jobs", limit, page_token, self.job_from_provider)

    async def cancel_job(self, account: Account, job_id: str) -> JobObject:
        return await self._job_action(account, job_id, "cancel")

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        return await self._job_action(account, job_id, "pause")

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        return await self._job_action(account, job_id, "resume")

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        path = f"/fine_tuning/jobs/{_seg(job_id)}/events"
        return await self._page(account, path, limit, page_token, self.event_from_provider)

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        path = f"/fine_tuning/jobs/{_seg(job_id)}/checkpoints"
        return await self._page(account, path, limit, page_token, self.checkpoint_from_provider)

    # -- chat and models -----------------------------------------------------------------------

    def chat_target(self, account: Account, model: str) -> tuple[Endpoint, str]:
        """Where `account`'s chat completions are sent: OpenAI's `{base}/chat/completions`."""
        return self.endpoint(account), "/chat/completions"

    async def chat(self, account: Account, body: bytes, *, model: str, stream: bool) -> ChatReply:
        """POSTs `body` unchanged to `chat_target` through `chat_http` (`_chat.relay_chat`)."""
        endpoint, path = self.chat_target(account, model)
        return await relay_chat(self.chat_http, endpoint, path, body, stream=stream)

    async def list_models(self, account: Account) -> list[JobObject]:
        """`GET /models`: the models the account can call, as OpenAI lists them."""
        body = await self.http.request_json("GET", self.endpoint(account), "/models")
        return [self.model_from_provider(m) for m in body.get("data") or [] if isinstance(m, dict)]

    async def get_model(self, account: Account, model: str) -> JobObject:
        """`GET /models/{model}` (`NotFound`, code `model_not_found`, when the provider has none)."""
        found = await self.http.request_json("GET", self.endpoint(account), f"/models/{_seg(model)}")
        return self.model_from_provider(found)

    # -- translation hooks (identity for OpenAI; the dated Azure API overrides them) ------------

    def model_from_provider(self, model: JobObject) -> JobObject:
        return model

    def job_from_provider(self, account: Account, job: JobObject) -> JobObject:
        return without_tag(job)

    def event_from_provider(self, account: Account, event: JobObject) -> JobObject:
        return event

    def checkpoint_from_provider(self, account: Account, checkpoint: JobObject) -> JobObject:
        return checkpoint

    # -- plumbing ------------------------------------------------------------------------------

    async def _job_action(self, account: Account, job_id: str, action: str) -> JobObject:
        # POSTs without a body, not retried: a repeated cancel can answer "already cancelled".
        path = f"/fine_tuning/jobs/{_seg(job_id)}/{action}"
        job = await self.http.request_json("POST", self.endpoint(account), path)
        return self.job_from_provider(account, job)

    async def _page(
        self,
        account: Account,
        path: str,
        limit: int,
        page_token: str | None,
        convert: Callable[[Account, JobObject], JobObject],
    ) -> Page:
        page = await self._raw_page(self.endpoint(account), path, limit, page_token, {})
        return Page([convert(account, item) for item in page.data], page.has_more, page.next_token)

    async def _raw_page(
        self, endpoint: Endpoint, path: str, limit: int, after: str | None, params: Mapping[str, str]
    ) -> Page:
        query: dict[str, Any] = {**params, "limit": limit}
        if after is not None:
            query["after"] = after
        body = await self.http.request_json("GET", endpoint, path, params=query)
        data = [item for item in body.get("data") or [] if isinstance(item, dict)]
        has_more = bool(body.get("has_more")) and bool(data)
        return Page(data, has_more, str(data[-1]["id"]) if has_more else None)


def _seg(value: str) -> str:
    """`value` as one URL path segment: ids come from the registry, but a `/`, `?` or `..` must
    never reach another path of the provider's API."""
    if not value or value in (".", ".."):
        raise NotFound("No such object at the provider.")
    return urllib.parse.quote(value, safe="")
