"""The Fireworks AI adapter: OpenAI's fine-tuning API on Fireworks' SFT and DPO jobs.

One account is one Fireworks API key (`Authorization: Bearer`) and one account id
(`x-portkey-fireworks-account-id`, checked by routing against Fireworks' id pattern); every path
is under `/v1/accounts/{account id}`. The API lives at `https://api.fireworks.ai`; another base
URL (configuration, or an allow-listed `x-portkey-custom-host`) serves the API, the dataset
uploads' own calls and inference (`/inference/v1/chat/completions`) alike.

A create (`Capability.STAGED_FILES`): `check_request` settles the method (`supervised` →
`supervisedFineTuningJobs`, `dpo` → `dpoJobs`), the base model and every training value before
any cost. The registry then stages each gateway file through `stage_file`, once per (file,
account, method): the lines are checked while they stream (`_datasets.check_lines`; every line
Fireworks would refuse is listed by number and the upload is abandoned before `validateUpload`)
into the dataset `_datasets.dataset_id(file id)` (`_datasets.upload_dataset`: multipart up to
150 MB, else the signed-URL flow). The registry waits for the dataset's `READY` through
`get_file` (a dataset that fails validation fails the job with Fireworks' reason), and
`create_job` posts the job with a job id derived from the gateway id, so a create repeated after a
lost answer finds the job (409) instead of training twice.

Native job ids are `<collection>/<job id>` (`supervisedFineTuningJobs/tg-…`, `dpoJobs/tg-…`):
Fireworks' two job kinds live in two collections, and a job's id alone does not say which. A bare
Fireworks job id is looked up in both.

Fireworks takes an absolute learning rate; `learning_rate_multiplier` is multiplied by
`BASE_LEARNING_RATE` (Fireworks publishes no per-model defaults; 1e-4 is the rate its LoRA
examples use) and the job's events say so; `provider_options.learning_rate` sets the rate itself.
Listing goes through the SFT jobs, then the DPO jobs, with Fireworks' page tokens kept by the
registry. Events are derived from the job (`_jobs.events_from_fireworks`); their ids carry the
state and progress observed, so the registry's mirror keeps one event per observed change.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import httpx
from tunegate.server.errors import Aborted, InvalidArgument, NotFound
from tunegate.server.providers._chat import ChatClient, relay_chat
from tunegate.server.providers._http import Endpoint, HttpClient, HttpSettings, Sleep
from tunegate.server.providers._jsonl import aconvert_with
from tunegate.server.providers.fireworks import _datasets, _jobs
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
from tunegate.server.routing._config import FIREWORKS

__all__ = ["BASE_LEARNING_RATE", "FireworksProvider"]

BASE_LEARNING_RATE: Final = 1e-4
"""What `learning_rate_multiplier` multiplies (see the module docstring)."""
HEADER_ACCOUNT: Final = "x-portkey-fireworks-account-id"
CHAT_PATH: Final = "/inference/v1/chat/completions"

_COLLECTION_OF: Final[Mapping[str, _jobs.Method]] = {
    "supervisedFineTuningJobs": "supervised",
    "dpoJobs": "dpo",
}
_COLLECTIONS: Final[Mapping[_jobs.Method, str]] = {m: c for c, m in _COLLECTION_OF.items()}
_JOB_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DATASET_NAME = re.compile(r"accounts/([a-z0-9-]+)/datasets/([a-z][a-z0-9-]*)")
_PAGE_TOKEN = re.compile(r"(supervised|dpo):(.*)", re.DOTALL)


def _method(request: Mapping[str, Any]) -> _jobs.Method:
    kind = (request.get("method") or {}).get("type") or "supervised"
    if kind == "supervised":
        return "supervised"
    if kind == "dpo":
        return "dpo"
    raise InvalidArgument(
        f"Fireworks runs supervised and dpo jobs through this API, not '{kind}'.",
        code="invalid_value",
        param="method.type",
    )


def _account_id(account: Account) -> str:
    account_id = account.options.get("account_id")
    if not account_id:
        raise InvalidArgument(
            f"Fireworks needs the account id the jobs run under ({HEADER_ACCOUNT}).",
            code="missing_provider_option",
            param=HEADER_ACCOUNT,
        )
    return account_id


def _native(collection: str, job: JobObject) -> JobObject:
    """`job` (from `_jobs.job_from_fireworks`) with its id qualified by its collection."""
    job["id"] = f"{collection}/{job['id']}"
    return job


def _split(native_id: str) -> list[tuple[str, str]]:
    """(collection, job id) pairs to try for a native id (two for a bare Fireworks job id)."""
    collection, _, job_id = native_id.rpartition("/")
    if not _JOB_ID.fullmatch(job_id) or (collection and collection not in _COLLECTION_OF):
        raise NotFound(f"No fine-tuning job {native_id!r} at Fireworks.", code="job_not_found")
    if collection:
        return [(collection, job_id)]
    return [(c, job_id) for c in _COLLECTION_OF]


def _notes(job: Mapping[str, Any], method: _jobs.Method) -> list[str]:
    """What the gateway translated, read back from the job (for its events)."""
    training = job.get("trainingConfig") if method == "dpo" else job
    rate = (training or {}).get("learningRate") if isinstance(training, Mapping) else None
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        return []
    multiplier = float(f"{rate / BASE_LEARNING_RATE:.15g}")
    return [
        f"learningRate {rate:g} = learning_rate_multiplier {multiplier:g} × the gateway's base rate "
        f"{BASE_LEARNING_RATE:g} (Fireworks takes an absolute learning rate)"
    ]


class FireworksProvider:
    """`Provider` (plus `StagingProvider` and chat) for Fireworks AI."""

    name = FIREWORKS
    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.CREATE,
            Capability.RETRIEVE,
            Capability.LIST,
            Capability.LIST_FULL_JOBS,
            Capability.CANCEL,
            Capability.RESUME,
            Capability.EVENTS,
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
        multipart_limit: int = _datasets.MULTIPART_LIMIT,
    ) -> None:
        self.http = HttpClient(self.name, settings, transport=transport, sleep=sleep, jitter=jitter)
        self.chat_http = ChatClient(self.http)
        self.multipart_limit = multipart_limit

    async def aclose(self) -> None:
        try:
            await self.chat_http.aclose()
        finally:
            await self.http.aclose()

    @staticmethod
    def _endpoint(account: Account) -> Endpoint:
        return Endpoint(account.base_url.rstrip("/"), {"Authorization": f"Bearer {account.credential}"}, {})

    @staticmethod
    def _jobs_path(account: Account, collection: str) -> str:
        return f"/v1/accounts/{_account_id(account)}/{collection}"

    # -- planning ------------------------------------------------------------------------------

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        method = _method(request)
        # The whole body, built against placeholder datasets: every value is checked here.
        _jobs.job_body(
            request=request,
            method=method,
            tag="ftjob-check",
            dataset="tg-check",
            evaluation_dataset="tg-check" if request.get("validation_file") else None,
            account_id=_account_id(account),
            suffix=request.get("suffix"),
            base_default_lr=BASE_LEARNING_RATE,
        )

    # -- files: datasets -----------------------------------------------------------------------

    def staging_key(self, account: Account, request: Mapping[str, Any]) -> str:
        return f"fireworks:{_method(request)}:{account.key}"

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
        account_id = _account_id(account)
        checked = aconvert_with(_datasets.check_lines(_method(request), param=param), chunks)
        uploaded = await _datasets.upload_dataset(
            self.http,
            self._endpoint(account),
            account_id,
            file_id=file_id,
            filename=filename,
            size=size,
            chunks=checked,
            multipart_limit=self.multipart_limit,
        )
        if uploaded.status == "processed":
            # The dataset was there already (uploaded for a job of the other method): the lines
            # were not read, so check them for this one now.
            async for _chunk in checked:
                pass
        return ProviderFile(
            _datasets.dataset_name(account_id, uploaded.id), uploaded.status, uploaded.status_details
        )

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        match = _DATASET_NAME.fullmatch(file_id)
        if match is None or match.group(1) != _account_id(account):
            raise NotFound(f"No dataset {file_id!r} in this Fireworks account.", code="file_not_found")
        found = await _datasets.get_dataset(
            self.http, self._endpoint(account), match.group(1), match.group(2)
        )
        return ProviderFile(file_id, found.status, found.status_details)

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        raise unsupported(self.name, "file uploads (files become datasets when a job uses them)")

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        raise unsupported(self.name, "result files")

    # -- jobs ----------------------------------------------------------------------------------

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        method = _method(request)
        collection, body = _jobs.job_body(
            request=request,
            method=method,
            tag=tag,
            dataset=str(request.get("training_file") or ""),
            evaluation_dataset=request.get("validation_file") or None,
            account_id=_account_id(account),
            suffix=request.get("suffix"),
            base_default_lr=BASE_LEARNING_RATE,
        )
        try:
            job = await self.http.request_json(
                "POST",
                self._endpoint(account),
                self._jobs_path(account, collection),
                params=_jobs.create_query(tag, method),
                json=body,
            )
        except Aborted:
            # 409: the job id derived from `tag` exists — this create already reached Fireworks
            # (its answer was lost). The job is that one; nothing is created twice.
            job = await self._get(account, collection, _jobs.job_id_for(tag))
        return self._job(collection, job)

    def _job(self, collection: str, job: Mapping[str, Any]) -> JobObject:
        found = _jobs.job_from_fireworks(
            job, method=_COLLECTION_OF[collection], base_default_lr=BASE_LEARNING_RATE
        )
        return _native(collection, found)

    async def _get(self, account: Account, collection: str, job_id: str) -> dict[str, Any]:
        path = f"{self._jobs_path(account, collection)}/{job_id}"
        return await self.http.request_json("GET", self._endpoint(account), path)

    async def _find(self, account: Account, native_id: str) -> tuple[str, dict[str, Any]]:
        """(collection, Fireworks job) for a native id; `NotFound` when neither collection has it."""
        missing: NotFound | None = None
        for collection, job_id in _split(native_id):
            try:
                return collection, await self._get(account, collection, job_id)
            except NotFound as exc:
                missing = exc
        assert missing is not None
        raise missing

    async def find_job_by_tag(self, account: Account, tag: str, *, created_after: int) -> JobObject | None:
        try:
            collection, job = await self._find(account, _jobs.job_id_for(tag))
        except NotFound:
            return None
        return self._job(collection, job) if _jobs.tag_of(job) == tag else None

    async def get_job(self, account: Account, job_id: str) -> JobObject:
        return self._job(*await self._find(account, job_id))

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page:
        """SFT jobs, then DPO jobs; the token is `<method>:<Fireworks' token>`."""
        method: _jobs.Method = "supervised"
        token: str | None = None
        if page_token:
            match = _PAGE_TOKEN.fullmatch(page_token)
            if match is None:
                raise InvalidArgument("Unknown page token.", code="invalid_value", param="after")
            method = "supervised" if match.group(1) == "supervised" else "dpo"
            token = match.group(2) or None
        data: list[JobObject] = []
        while True:
            collection = _COLLECTIONS[method]
            answer = await self.http.request_json(
                "GET",
                self._endpoint(account),
                self._jobs_path(account, collection),
                params=_jobs.list_params(limit - len(data), token),
            )
            jobs, token = _jobs.page_from_fireworks(answer, method)
            data += [self._job(collection, job) for job in jobs]
            if token:
                return Page(data, True, f"{method}:{token}")
            if method == "dpo":
                return Page(data, False, None)
            method, token = "dpo", None
            if len(data) >= limit:
                return Page(data, True, "dpo:")

    async def cancel_job(self, account: Account, job_id: str) -> JobObject:
        return await self._action(account, job_id, "cancel")

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        return await self._action(account, job_id, "resume")

    async def _action(self, account: Account, job_id: str, action: str) -> JobObject:
        collection, job = await self._find(account, job_id)
        name = str(job.get("name") or "").rsplit("/", 1)[-1]
        path = f"{self._jobs_path(account, collection)}/{name}:{action}"
        await self.http.request_json("POST", self._endpoint(account), path, json={})
        return self._job(collection, await self._get(account, collection, name))

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        raise unsupported(self.name, "pausing jobs (Fireworks has cancel and resume)")

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        collection, job = await self._find(account, job_id)
        method = _COLLECTION_OF[collection]
        events = _jobs.events_from_fireworks(job, _notes(job, method))
        return Page.sliced(events, limit, page_token)

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        raise unsupported(self.name, "checkpoints")

    # -- chat ----------------------------------------------------------------------------------

    async def chat(self, account: Account, body: bytes, *, model: str, stream: bool) -> ChatReply:
        """The body, unchanged, to Fireworks' OpenAI-compatible inference API: `model` is a
        tuned model (`accounts/<account>/models/<id>`, a serverless LoRA), a base model, or a
        model on a named deployment (`<model>#accounts/<account>/deployments/<id>`)."""
        return await relay_chat(self.chat_http, self._endpoint(account), CHAT_PATH, body, stream=stream)
