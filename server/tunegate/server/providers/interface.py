"""The provider interface every adapter implements, and the values that cross it.

An adapter speaks one provider's API and nothing else. It receives and returns *OpenAI-shaped*
JSON (`dict`s exactly as OpenAI's API would send them, with the provider's own *native* ids);
the job registry above it swaps native ids for gateway ids and keeps state. Each adapter owns its
translation: request fields, hyperparameter names, state mapping to OpenAI's `validating_files,
queued, running, succeeded, failed, cancelled` (+ `paused`), timestamps to integer seconds, and
provider errors to the one error vocabulary (`tunegate.server.errors`).

An operation outside an adapter's `capabilities` must raise `Unsupported` (HTTP 400,
`unsupported_by_provider`) — never fall back to a different operation (pause is never cancel).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tunegate.server.errors import Unsupported

__all__ = [
    "Account",
    "Capability",
    "ChatProvider",
    "ChatReply",
    "JobObject",
    "Page",
    "Provider",
    "ProviderDownload",
    "ProviderFile",
    "StagingProvider",
    "unsupported",
]

JobObject = dict[str, Any]
"""An OpenAI `fine_tuning.job` (or event, or checkpoint) as JSON, with the provider's native ids."""


class Capability(enum.Enum):
    """What an adapter can do; the servicer checks before calling."""

    FILES = "files"
    CREATE = "create"
    RETRIEVE = "retrieve"
    LIST = "list"
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    EVENTS = "events"
    CHECKPOINTS = "checkpoints"
    TAG_LOOKUP = "tag_lookup"
    """The adapter can find a job again by the gateway's tag (`find_job_by_tag`)."""
    RESULT_FILES = "result_files"
    """A job's `result_files` can be read back (`download_file`); the registry imports them
    into the gateway's file store under the job's owner, so callers only see gateway ids."""
    CHAT = "chat"
    """The adapter serves chat completions on its models (`ChatProvider.chat`)."""
    MODELS = "models"
    """The adapter lists the account's models (`ChatProvider.list_models` / `get_model`)."""
    LIST_FULL_JOBS = "list_full_jobs"
    """`list_jobs` answers each job exactly as `get_job` would, so the job monitor reads an
    account's followed jobs from its listing (a page for up to 100 jobs) instead of one by one."""
    STAGED_FILES = "staged_files"
    """Gateway files are staged per job (`StagingProvider`): converted to what the job's model
    reads and written where the provider reads them, once per `staging_key`, instead of uploaded
    once per account. A create that stages files answers at once, in `validating_files`; the
    staging and the provider's create run in the background, and a failure fails the job."""


@dataclass(frozen=True, slots=True)
class Account:
    """Where and as whom a provider is called: resolved per request by `tunegate.server.routing`.

    `key` is the account's stable, secret-free identity (kept in the registry beside each job
    and provider file copy), e.g. `openai:key:<fingerprint>` or `vk:<virtual key name>`.
    `credential` is the secret (an API key or bearer token); it is used for calls only and is
    never stored, logged or rendered (`repr` hides it).
    """

    provider: str
    key: str
    base_url: str
    credential: str = field(repr=False)
    region: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    """Provider-specific settings: Azure `resource_name`, `deployment_id`, `api_version`, …"""
    from_virtual_key: bool = False
    """True when the credential came from the gateway's config, so it can be found again later
    (follow-up calls and the start-up reconciler need no headers)."""


@dataclass(frozen=True, slots=True)
class ProviderFile:
    """A file as a provider stores it. `status` is OpenAI's: `uploaded`, `processed` or `error`
    (Azure's asynchronous import reports `pending`/`running` as `uploaded`)."""

    id: str
    status: str
    status_details: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderDownload:
    """A provider file's bytes: iterate `chunks` exactly once (bounded memory)."""

    filename: str
    purpose: str
    content_type: str
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class ChatReply:
    """A provider's answer to a chat completion, as the provider sent it.

    `chunks` is the body as it arrives — for `stream=False` one JSON document (`chat.completion`),
    for `stream=True` the server-sent events, each item one or more whole events (`data: …\n\n`,
    the last `data: [DONE]`). Iterate it once, inside `contextlib.aclosing`: closing it early
    (the caller went away) closes the provider's response, which cancels its request. A failure
    while it is read raises a `TunegateError` (`UpstreamError` for a broken stream).
    `headers` are the provider's response headers worth passing back (request id,
    `openai-processing-ms`, rate-limit headers), lower-case names."""

    content_type: str
    chunks: AsyncIterator[bytes]
    headers: Mapping[str, str] = field(default_factory=dict)


class ChatProvider(Protocol):
    """What an adapter with `Capability.CHAT` / `Capability.MODELS` adds to `Provider`.

    Chat is paid: a request is never sent twice once any of it may have reached the provider;
    only a failure to connect may be retried. Errors before the answer's head keep the
    provider's status and OpenAI error envelope (`TunegateError` with its status, message, code,
    param, and `retry_after` from `Retry-After`)."""

    async def chat(self, account: Account, body: bytes, *, model: str, stream: bool) -> ChatReply:
        """Sends `body` — OpenAI's `CreateChatCompletionRequest` JSON exactly as the caller sent it
        (`model` is its model, `stream` its stream flag) — to the account's chat endpoint, and
        returns once the provider's answer head has arrived."""
        ...

    async def list_models(self, account: Account) -> list[JobObject]:
        """The account's models as OpenAI lists them (`object: model` dicts)."""
        ...

    async def get_model(self, account: Account, model: str) -> JobObject:
        """One model (`object: model`), or `NotFound` with code `model_not_found`."""
        ...


class StagingProvider(Protocol):
    """What an adapter with `Capability.STAGED_FILES` adds to `Provider`."""

    def staging_key(self, account: Account, request: Mapping[str, Any]) -> str:
        """Where a gateway file staged for `request` lives, as a secret-free key: two requests
        with the same key reuse one staged copy (e.g. Bedrock: model family, bucket, prefix).
        Raises `InvalidArgument` when the request lacks what staging needs."""
        ...

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
        """Converts and writes one gateway file (streamed, flat memory); returns its native
        reference (e.g. an `s3://` URI) as a `processed` file. A file that cannot be converted
        raises `InvalidArgument` naming `param` and every offending line; nothing is left
        behind on failure."""
        ...


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a provider listing, in OpenAI's shape.

    `next_token` is the provider's own continuation token (an id, an offset, an opaque string):
    the registry keeps it server-side, and clients only ever see OpenAI's `after=<id>`.
    """

    data: list[JobObject]
    has_more: bool
    next_token: str | None = None

    @classmethod
    def sliced(cls, items: list[JobObject], limit: int, page_token: str | None) -> Page:
        """One page of a list an adapter derives whole from one provider object (e.g. events
        built from a job, newest first); the token is an offset into it."""
        start = int(page_token or 0)
        more = start + limit < len(items)
        return cls(items[start : start + limit], more, str(start + limit) if more else None)


class Provider(Protocol):
    """One fine-tuning provider. Implementations are stateless apart from connection pools and
    are shared by all requests; every outbound call has a timeout, and only idempotent calls
    are retried (with backoff, jitter and `Retry-After`)."""

    name: str
    """The routing name (`openai`, `azure-openai`, …), as in `x-portkey-provider`."""
    capabilities: frozenset[Capability]
    pages_by_id: bool
    """True when listings page like OpenAI's: `page_token` is the native id to list after and
    `Page.next_token` the id of the page's last item. The registry then keeps no cursor row:
    a client's `after` (a native id, or the gateway id of a job it maps to) is the token."""

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        """Streams a file to the provider (never buffering it whole); returns its native record."""
        ...

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        """The provider's current record of a file (used to await Azure's `processed`)."""
        ...

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        """A provider file's content (a job's result file), streamed; the registry reads result
        files only from adapters that declare `RESULT_FILES`."""
        ...

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        """Raises `InvalidArgument` (with `param`) for a create request this provider would
        refuse — before any provider cost, e.g. Azure's dated API: suffix ≤ 40 characters of
        `[A-Za-z0-9_-]`, no DPO. The gateway's general OpenAI rules are checked before this."""
        ...

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        """Creates a job from an OpenAI `CreateFineTuningJobRequest` body whose file ids are
        already native. `tag` (the gateway job id) must be attached where the provider keeps
        it (OpenAI: `metadata`), so `find_job_by_tag` can find the job after a crash. Not retried."""
        ...

    async def find_job_by_tag(self, account: Account, tag: str, *, created_after: int) -> JobObject | None:
        """The job created with `tag`, if the provider has it (searching jobs created at or after
        `created_after`, Unix seconds)."""
        ...

    async def get_job(self, account: Account, job_id: str) -> JobObject: ...

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page: ...

    async def cancel_job(self, account: Account, job_id: str) -> JobObject: ...

    async def pause_job(self, account: Account, job_id: str) -> JobObject: ...

    async def resume_job(self, account: Account, job_id: str) -> JobObject: ...

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        """Events newest first, as OpenAI lists them."""
        ...

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        """Checkpoints newest first, as OpenAI lists them."""
        ...

    async def aclose(self) -> None:
        """Closes connection pools."""
        ...


def unsupported(provider: str, operation: str) -> Unsupported:
    """The error for an operation a provider does not have."""
    return Unsupported(
        f"The '{provider}' provider does not support {operation}.",
        code="unsupported_by_provider",
        param=None,
    )
