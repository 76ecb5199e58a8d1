"""A fake of Fireworks AI's REST API (``/v1/accounts/{account}/…``) and its OpenAI-compatible
inference API (``/inference/v1/chat/completions``) that checks what it receives.

The oracle is the ``fireworks-ai`` SDK's typed models (``tests.fakes._fireworks_schema``): request
bodies are checked against the SDK's ``…Params`` (unknown keys, types, enums, required keys) and
every JSON answer against its response model (``Dataset``, ``DatasetUploadResponse``,
``DatasetGetUploadEndpointResponse``, ``SupervisedFineTuningJob``, ``DpoJob``), with no key the
model does not declare. Facts the SDK does not carry come from providers.md §7 (routes, limits,
the error envelope) and the SDK's own signed-URL helper (``fireworks.lib.dataset_upload``). A
request a correct gateway never sends is answered with Fireworks' error envelope
``{"code": <gRPC code>, "message", "details": []}`` and appended to ``fake.violations``.

Datasets (``fake.datasets``, keyed by (account, dataset id)):

- ``POST …/datasets`` ``DatasetCreateParams``; the id must be a Fireworks resource id starting
  with a letter (``[a-z][a-z0-9-]*``, ≤ 63); an existing id is 409 ``ALREADY_EXISTS`` (not a
  violation);
- ``POST …/datasets/{d}:upload``: multipart with exactly one ``file`` part, ≤ ``multipart_limit``
  bytes (150 MB);
- ``POST …/datasets/{d}:getUploadEndpoint`` ``{filenameToSize: {name: "<bytes>"}}`` (the sizes are
  int64 strings, as the SDK declares them) → one signed URL per name, on this server:
  ``PUT /signed-upload/{token}?X-Goog-Signature=…``. The PUT must carry no ``Authorization``,
  ``Content-Type: application/octet-stream``, ``X-Goog-Content-Length-Range: N,N`` and a
  ``Content-Length`` equal to the declared size, and its body must be that long;
- ``POST …/datasets/{d}:validateUpload`` ``{}``: needs uploaded bytes; the data is checked (every
  non-blank line a JSON object, at least ``min_examples`` of them) or failed on purpose
  (``fake.fail_validation[dataset_id] = message``). The dataset's next ``ready_after_gets`` GETs
  still answer ``UPLOADING``, then it is ``READY`` (0: at once) — or it stays ``UPLOADING`` with
  ``status {code: INVALID_ARGUMENT, message}``;
- ``GET …/datasets/{d}``, ``GET …/datasets`` (``pageSize``, ``pageToken``).

Jobs (``fake.jobs``): ``POST …/supervisedFineTuningJobs[?supervisedFineTuningJobId=]`` and
``…/dpoJobs[?dpoJobId=]`` (the dataset must exist and be ``READY``; a repeated id is 409),
GET, list (``pageSize`` ≤ 200, ``pageToken``), DELETE, ``:cancel``, ``:resume``. States progress
``JOB_STATE_CREATING → JOB_STATE_RUNNING → JOB_STATE_COMPLETED`` (``jobProgress`` percent 0/50/100,
``inputTokens``), ``steps_per_get`` transitions per GET, or ``fake.advance(job_id, to=…)``;
``fake.fail_job(job_id, message)`` fails one.

Chat: ``POST /inference/v1/chat/completions`` — the request must fit OpenAI's
``CreateChatCompletionRequest`` and the SDK's ``CompletionCreateParams`` (types; extra keys
allowed) and name a known model (``fake.base_models`` or a completed job's output model); the
answer comes from ``tests.fakes._chat`` (``fake.chat`` knobs, ``stream=True`` as SSE) and the
non-streamed answer is also checked against the SDK's ``CompletionCreateResponse`` (types).

Auth: ``Authorization: Bearer <key>`` on ``/v1`` and ``/inference`` (``api_keys`` restricts
them); ``accounts`` restricts the account ids.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from fireworks.types import (
    Dataset,
    DatasetCreateParams,
    DatasetGetUploadEndpointParams,
    DatasetGetUploadEndpointResponse,
    DatasetUploadResponse,
    DpoJob,
    DpoJobCreateParams,
    SupervisedFineTuningJob,
    SupervisedFineTuningJobCreateParams,
)
from fireworks.types.chat import CompletionCreateParams, CompletionCreateResponse
from pydantic import BaseModel

from tests.fakes._chat import ChatCall, ChatSettings, chat_completion, read_chat_request
from tests.fakes._common import RECORD, ApiError, FakeServer, run_cli
from tests.fakes._fireworks_schema import check_model, check_params

__all__ = ["FakeFireworks", "FireworksDataset", "FireworksJob", "main", "start_fake_fireworks_in_thread"]

MULTIPART_LIMIT = 150 * 10**6
_CHUNK = 256 * 1024
_RESOURCE_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DATASET_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 412: 9, 429: 8, 500: 13, 503: 14}
_COLLECTIONS: dict[str, tuple[str, type[BaseModel], type]] = {
    "supervisedFineTuningJobs": (
        "supervisedFineTuningJobId",
        SupervisedFineTuningJob,
        SupervisedFineTuningJobCreateParams,
    ),
    "dpoJobs": ("dpoJobId", DpoJob, DpoJobCreateParams),
}
PROGRESSION = ("JOB_STATE_CREATING", "JOB_STATE_RUNNING", "JOB_STATE_COMPLETED")
_TERMINAL = frozenset({"JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})
BASE_MODELS = ("accounts/fireworks/models/llama-v3p1-8b-instruct", "accounts/fireworks/models/qwen3-8b")


def _rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _checker(model: type[BaseModel]) -> Callable[[Any], None]:
    return lambda body: check_model(model, body)


def _bad(message: str, status: int = 400) -> ApiError:
    return ApiError(status, message, violation=True)


@dataclass
class FireworksDataset:
    """One dataset as the fake keeps it."""

    account: str
    id: str
    display_name: str | None
    format: str | None
    created_at: int
    state: str = "UPLOADING"
    status: dict[str, str] | None = None
    path: Path | None = None
    size: int = 0
    filename: str | None = None
    examples: int = 0
    validated: bool = False
    gets_until_ready: int = 0
    signed: dict[str, int] = field(default_factory=dict)
    """Signed-URL tokens → the declared size, until used."""

    def content(self) -> bytes:
        return self.path.read_bytes() if self.path is not None else b""


@dataclass
class FireworksJob:
    """One SFT or DPO job as the fake keeps it."""

    account: str
    collection: str
    id: str
    body: dict[str, Any]
    created_at: int
    state: str = "JOB_STATE_CREATING"
    status: dict[str, str] | None = None
    updated_at: int = 0
    completed_at: int | None = None
    percent: int = 0

    @property
    def name(self) -> str:
        return f"accounts/{self.account}/{self.collection}/{self.id}"

    @property
    def output_model(self) -> str:
        config = self.body.get("trainingConfig") or {} if self.collection == "dpoJobs" else self.body
        return f"accounts/{self.account}/models/{config.get('outputModel') or self.id}"


class FakeFireworks(FakeServer):
    """Fireworks under ``/v1/accounts/{account}`` and ``/inference/v1`` (see the module docstring)."""

    def __init__(
        self,
        *,
        api_keys: set[str] | None = None,
        accounts: set[str] | None = None,
        steps_per_get: int = 1,
        ready_after_gets: int = 1,
        min_examples: int = 3,
        multipart_limit: int = MULTIPART_LIMIT,
    ) -> None:
        super().__init__(steps_per_get=steps_per_get)
        self.api_keys = api_keys
        self.accounts = accounts
        self.ready_after_gets = ready_after_gets
        self.min_examples = min_examples
        self.multipart_limit = multipart_limit
        self.datasets: dict[tuple[str, str], FireworksDataset] = {}
        self.fail_validation: dict[str, str] = {}
        """dataset id → the message its validation fails with."""
        self.jobs: dict[str, FireworksJob] = {}
        """job name (``accounts/{a}/{collection}/{id}``) → job."""
        self.chat = ChatSettings()
        self.chat_calls: list[ChatCall] = []
        self.base_models: tuple[str, ...] = BASE_MODELS
        self._tokens: dict[str, tuple[str, str]] = {}

    @property
    def base_url(self) -> str:
        """What an adapter's endpoint is built on (``https://api.fireworks.ai`` in production)."""
        return self.host

    def job_count(self) -> int:
        return len(self.jobs)

    def _job(self, job_id: str) -> FireworksJob:
        for job in self.jobs.values():
            if job_id in (job.id, job.name):
                return job
        raise KeyError(f"no job {job_id!r}")

    def advance(self, job_id: str, to: str | None = None, steps: int = 1) -> str:
        def run() -> str:
            job = self._job(job_id)
            if to is not None and to not in PROGRESSION:
                self._set_state(job, to)
                return job.state
            for _ in range(1000 if to is not None else steps):
                if job.state == to or job.state in _TERMINAL:
                    break
                self._step(job)
            return job.state

        result: str = self.call(run)
        return result

    def fail_job(self, job_id: str, message: str) -> None:
        """Fails the job with ``status {code: INTERNAL, message}``."""

        def run() -> None:
            job = self._job(job_id)
            self._set_state(job, "JOB_STATE_FAILED")
            job.status = {"code": "INTERNAL", "message": message}

        self.call(run)

    def _set_state(self, job: FireworksJob, state: str) -> None:
        job.state = state
        job.updated_at = self.clock.now()
        if state in _TERMINAL:
            job.completed_at = job.updated_at
        if state == "JOB_STATE_COMPLETED":
            job.percent = 100

    def _step(self, job: FireworksJob) -> None:
        if job.state in _TERMINAL:
            return
        index = PROGRESSION.index(job.state) if job.state in PROGRESSION else 0
        nxt = PROGRESSION[min(index + 1, len(PROGRESSION) - 1)]
        self._set_state(job, nxt)
        job.percent = {"JOB_STATE_RUNNING": 50, "JOB_STATE_COMPLETED": 100}.get(nxt, job.percent)

    # -- routing -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        base = "/v1/accounts/{account}"
        app.add_routes(
            [
                web.post(base + "/datasets", self.create_dataset),
                web.get(base + "/datasets", self.list_datasets),
                web.get(base + "/datasets/{dataset}", self.get_dataset),
                web.post(base + "/datasets/{tail}", self.dataset_action),
                web.put("/signed-upload/{token}", self.signed_upload),
                web.post(base + "/{collection:supervisedFineTuningJobs|dpoJobs}", self.create_job),
                web.get(base + "/{collection:supervisedFineTuningJobs|dpoJobs}", self.list_jobs),
                web.get(base + "/{collection:supervisedFineTuningJobs|dpoJobs}/{job}", self.get_job),
                web.delete(base + "/{collection:supervisedFineTuningJobs|dpoJobs}/{job}", self.delete_job),
                web.post(base + "/{collection:supervisedFineTuningJobs|dpoJobs}/{tail}", self.job_action),
                web.post("/inference/v1/chat/completions", self.chat_completion),
            ]
        )

    def render_error(self, request: web.Request, error: ApiError) -> web.Response:
        body = {"code": _GRPC.get(error.status, 2), "message": error.message, "details": []}
        return web.json_response(body, status=error.status, headers=error.headers)

    def _auth(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise ApiError(401, "Missing or malformed Authorization header (Bearer).", violation=True)
        key = header[7:].strip()
        if self.api_keys is not None and key not in self.api_keys:
            raise ApiError(401, "Invalid API key.")
        return key

    def _account(self, request: web.Request) -> str:
        self._auth(request)
        account = request.match_info["account"]
        if not _RESOURCE_ID.fullmatch(account):
            raise _bad(f"Invalid account id {account!r}.")
        if self.accounts is not None and account not in self.accounts:
            raise ApiError(403, f"Permission denied on account {account!r}.")
        return account

    async def _json(self, request: web.Request) -> Any:
        if request.content_type != "application/json":
            raise _bad(f"Expected application/json, got {request.content_type!r}.")
        body = request[RECORD].json
        if body is None:
            raise _bad("Empty JSON body.")
        return body

    @staticmethod
    def _params(td: type, body: Any, **kwargs: Any) -> None:
        try:
            check_params(td, body, **kwargs)
        except ValueError as exc:
            raise _bad(f"Invalid request: {exc}") from exc

    def _no_query(self, request: web.Request, allowed: frozenset[str] = frozenset()) -> None:
        unknown = set(request.query) - allowed
        if unknown:
            raise _bad(f"Unknown query parameter(s): {sorted(unknown)}.")

    # -- datasets --------------------------------------------------------------------------------
    def dataset_json(self, dataset: FireworksDataset) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": f"accounts/{dataset.account}/datasets/{dataset.id}",
            "createTime": _rfc3339(dataset.created_at),
            "updateTime": _rfc3339(dataset.created_at),
            "createdBy": "fake@example.com",
            "state": dataset.state,
            "userUploaded": {},
        }
        if dataset.display_name is not None:
            body["displayName"] = dataset.display_name
        if dataset.format is not None:
            body["format"] = dataset.format
        if dataset.status is not None:
            body["status"] = dict(dataset.status)
        if dataset.state == "READY":
            body["exampleCount"] = str(dataset.examples)
        return body

    def _dataset(self, account: str, dataset_id: str) -> FireworksDataset:
        dataset = self.datasets.get((account, dataset_id))
        if dataset is None:
            raise ApiError(404, f"Dataset accounts/{account}/datasets/{dataset_id} not found.")
        return dataset

    async def create_dataset(self, request: web.Request) -> web.Response:
        account = self._account(request)
        self._no_query(request)
        body = await self._json(request)
        self._params(DatasetCreateParams, body, exclude=frozenset({"account_id"}))
        ident = body["datasetId"]
        if not _DATASET_ID.fullmatch(ident):
            raise _bad(
                f"Invalid dataset id {ident!r}: lower-case letters, digits, '-', a letter first, ≤ 63."
            )
        spec = body["dataset"]
        if "userUploaded" not in spec:
            raise _bad("A dataset to upload needs 'userUploaded'.")
        if (account, ident) in self.datasets:
            raise ApiError(409, f"Dataset accounts/{account}/datasets/{ident} already exists.")
        dataset = FireworksDataset(
            account, ident, spec.get("displayName"), spec.get("format"), self.clock.now()
        )
        self.datasets[(account, ident)] = dataset
        return self.emit(request, self.dataset_json(dataset), _checker(Dataset))

    async def get_dataset(self, request: web.Request) -> web.Response:
        account = self._account(request)
        self._no_query(request, frozenset({"readMask"}))
        dataset = self._dataset(account, request.match_info["dataset"])
        if dataset.validated and dataset.state == "UPLOADING" and dataset.status is None:
            if dataset.gets_until_ready <= 0:
                dataset.state = "READY"
            dataset.gets_until_ready -= 1
        return self.emit(request, self.dataset_json(dataset), _checker(Dataset))

    async def list_datasets(self, request: web.Request) -> web.Response:
        account = self._account(request)
        self._no_query(request, frozenset({"pageSize", "pageToken", "filter", "orderBy", "readMask"}))
        items = [d for (a, _), d in self.datasets.items() if a == account]
        page, token = self._page(request, items)
        body: dict[str, Any] = {"datasets": [self.dataset_json(d) for d in page], "totalSize": len(items)}
        if token:
            body["nextPageToken"] = token
        for item in body["datasets"]:
            check_model(Dataset, item)
        return web.json_response(body)

    async def dataset_action(self, request: web.Request) -> web.StreamResponse:
        account = self._account(request)
        tail = request.match_info["tail"]
        ident, _, action = tail.partition(":")
        handlers = {
            "upload": self._upload,
            "getUploadEndpoint": self._upload_endpoint,
            "validateUpload": self._validate_upload,
        }
        if action not in handlers:
            raise _bad(f"Unknown dataset method {tail!r}.", 404)
        self._no_query(request)
        return await handlers[action](request, self._dataset(account, ident))

    async def _upload(self, request: web.Request, dataset: FireworksDataset) -> web.Response:
        if request.content_type != "multipart/form-data":
            raise _bad(f"Expected multipart/form-data, got {request.content_type!r}.")
        reader = await request.multipart()
        path = self.temp_path()
        size, filename, parts = 0, None, 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name != "file":
                raise _bad(f"Unexpected form field {getattr(part, 'name', None)!r}: only 'file'.")
            parts += 1
            filename = part.filename
            with path.open("wb") as out:
                while chunk := await part.read_chunk(_CHUNK):
                    size += len(chunk)
                    if size > self.multipart_limit:
                        raise _bad(f"The file is larger than {self.multipart_limit} bytes: use a signed URL.")
                    out.write(chunk)
        if parts != 1 or not filename:
            raise _bad("Exactly one 'file' part with a file name is required.")
        request[RECORD].file_bytes = size
        self._store(dataset, path, size, filename)
        body = {
            "id": dataset.id,
            "object": "file",
            "bytes": size,
            "created_at": self.clock.now(),
            "filename": filename,
            "purpose": "fine-tune",
        }
        return self.emit(request, body, _checker(DatasetUploadResponse))

    def _store(self, dataset: FireworksDataset, path: Path, size: int, filename: str) -> None:
        if not filename.endswith(".jsonl"):
            raise _bad(f"A dataset file must end in '.jsonl', not {filename!r}.")
        dataset.path, dataset.size, dataset.filename = path, size, filename
        dataset.state, dataset.status, dataset.validated = "UPLOADING", None, False

    async def _upload_endpoint(self, request: web.Request, dataset: FireworksDataset) -> web.Response:
        body = await self._json(request)
        self._params(DatasetGetUploadEndpointParams, body, exclude=frozenset({"account_id"}))
        sizes = body["filenameToSize"]
        if not sizes:
            raise _bad("filenameToSize is empty.")
        urls: dict[str, str] = {}
        dataset.signed.clear()
        for name, size in sizes.items():
            if not size.isdigit() or int(size) <= 0:
                raise _bad(f"filenameToSize[{name!r}] must be a positive byte count, not {size!r}.")
            token = secrets.token_hex(8)
            self._tokens[token] = (dataset.account, dataset.id)
            dataset.signed[token] = int(size)
            urls[name] = (
                f"{self.host}/signed-upload/{token}?X-Goog-Signature={secrets.token_hex(16)}&name={name}"
            )
        return self.emit(request, {"filenameToSignedUrls": urls}, _checker(DatasetGetUploadEndpointResponse))

    async def signed_upload(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        where = self._tokens.get(token)
        if where is None or "X-Goog-Signature" not in request.query:
            raise ApiError(403, "SignatureDoesNotMatch", violation=True)
        if "Authorization" in request.headers:
            raise _bad("The Fireworks credential was sent to the storage host.", 400)
        dataset = self.datasets[where]
        size = dataset.signed.get(token)
        if size is None:
            raise _bad("The signed URL was used already.", 403)
        if request.headers.get("Content-Length") != str(size):
            raise _bad(
                f"Content-Length {request.headers.get('Content-Length')!r} is not the declared {size}."
            )
        if request.headers.get("X-Goog-Content-Length-Range") != f"{size},{size}":
            raise _bad(
                "X-Goog-Content-Length-Range must be '<size>,<size>' (it is signed into the URL).", 403
            )
        if request.content_type != "application/octet-stream":
            raise _bad("Content-Type must be application/octet-stream (it is signed into the URL).", 403)
        path = self.temp_path()
        received = 0
        with path.open("wb") as out:
            while chunk := await request.content.read(_CHUNK):
                received += len(chunk)
                out.write(chunk)
        request[RECORD].file_bytes = received
        if received != size:
            raise _bad(f"Received {received} bytes, declared {size}.")
        del dataset.signed[token]
        self._store(dataset, path, size, request.query.get("name") or f"{dataset.id}.jsonl")
        return web.Response(status=200)

    async def _validate_upload(self, request: web.Request, dataset: FireworksDataset) -> web.Response:
        body = await self._json(request)
        if body != {}:
            raise _bad("validateUpload takes an empty object.")
        if dataset.path is None:
            raise ApiError(400, "No file was uploaded to this dataset.", violation=True)
        if dataset.state == "READY":
            return web.json_response({})
        message = self.fail_validation.get(dataset.id) or self._check_lines(dataset)
        dataset.validated = True
        if message is not None:
            dataset.status = {"code": "INVALID_ARGUMENT", "message": message}
        else:
            dataset.gets_until_ready = self.ready_after_gets
            if self.ready_after_gets == 0:
                dataset.state = "READY"
        return web.json_response({})

    def _check_lines(self, dataset: FireworksDataset) -> str | None:
        examples = 0
        for number, raw in enumerate(dataset.content().split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return f"Line {number}: invalid JSON."
            if not isinstance(line, dict):
                return f"Line {number}: not a JSON object."
            examples += 1
        dataset.examples = examples
        if examples < self.min_examples:
            return f"The dataset has {examples} examples; at least {self.min_examples} are required."
        return None

    def _page(self, request: web.Request, items: list[Any]) -> tuple[list[Any], str | None]:
        try:
            size = int(request.query.get("pageSize", "50"))
            start = int(request.query.get("pageToken") or "0")
        except ValueError as exc:
            raise _bad(f"Invalid page parameter: {exc}") from exc
        if not 0 < size <= 200 or start < 0:
            raise _bad("pageSize must be 1-200.")
        end = start + size
        return items[start:end], (str(end) if end < len(items) else None)

    # -- jobs ------------------------------------------------------------------------------------
    def job_json(self, job: FireworksJob) -> dict[str, Any]:
        """The job as Fireworks answers it: the create body plus the output fields its SDK model
        declares (``DpoJob`` has no ``updateTime`` and no ``jobProgress``)."""
        declared = _declared(_COLLECTIONS[job.collection][1])
        body = {**job.body, "name": job.name, "state": job.state, "createTime": _rfc3339(job.created_at)}
        body["createdBy"] = "fake@example.com"
        if "updateTime" in declared:
            body["updateTime"] = _rfc3339(job.updated_at or job.created_at)
        if job.status is not None:
            body["status"] = dict(job.status)
        if job.completed_at is not None:
            body["completedTime"] = _rfc3339(job.completed_at)
        if job.state != "JOB_STATE_CREATING" and "jobProgress" in declared:
            dataset = self.datasets.get((job.account, job.body["dataset"].rsplit("/", 1)[-1]))
            examples = dataset.examples if dataset is not None else 0
            body["jobProgress"] = {"percent": job.percent, "epoch": 1, "inputTokens": 100 * examples}
        if job.collection == "supervisedFineTuningJobs" and "outputModel" not in body:
            body["outputModel"] = job.output_model
        return body

    def _emit_job(self, request: web.Request, job: FireworksJob) -> web.Response:
        return self.emit(request, self.job_json(job), _checker(_COLLECTIONS[job.collection][1]))

    def _ready_dataset(self, account: str, name: Any, param: str) -> None:
        match = re.fullmatch(r"accounts/([a-z0-9-]+)/datasets/([a-z0-9-]+)", str(name))
        if match is None:
            raise _bad(f"{param} must be a dataset resource name, not {name!r}.")
        dataset = self.datasets.get((match.group(1), match.group(2)))
        if dataset is None:
            raise _bad(f"{param}: dataset {name} not found.")
        if dataset.state != "READY":
            raise _bad(f"{param}: dataset {name} is not READY ({dataset.state}).")

    async def create_job(self, request: web.Request) -> web.Response:
        account = self._account(request)
        collection = request.match_info["collection"]
        id_param, _, params = _COLLECTIONS[collection]
        self._no_query(request, frozenset({id_param}))
        body = await self._json(request)
        self._params(params, body, exclude=frozenset({"account_id", _snake(id_param)}))
        self._ready_dataset(account, body["dataset"], "dataset")
        if "evaluationDataset" in body:
            self._ready_dataset(account, body["evaluationDataset"], "evaluationDataset")
        config = body.get("trainingConfig") or {} if collection == "dpoJobs" else body
        if not (config.get("baseModel") or config.get("warmStartFrom")):
            raise _bad("baseModel or warmStartFrom is required.")
        job_id = request.query.get(id_param) or secrets.token_hex(10)
        if not _RESOURCE_ID.fullmatch(job_id):
            raise _bad(f"Invalid job id {job_id!r}.")
        output = config.get("outputModel")
        if output is not None and not _RESOURCE_ID.fullmatch(str(output)):
            raise _bad(f"Invalid outputModel {output!r}: a model id (lower-case letters, digits, '-').")
        job = FireworksJob(account, collection, job_id, dict(body), self.clock.now())
        if job.name in self.jobs:
            raise ApiError(409, f"Job {job.name} already exists.")
        self.jobs[job.name] = job
        return self._emit_job(request, job)

    def _find(self, request: web.Request, job_id: str) -> FireworksJob:
        account = self._account(request)
        name = f"accounts/{account}/{request.match_info['collection']}/{job_id}"
        job = self.jobs.get(name)
        if job is None:
            raise ApiError(404, f"Job {name} not found.")
        return job

    async def get_job(self, request: web.Request) -> web.Response:
        self._no_query(request, frozenset({"readMask"}))
        job = self._find(request, request.match_info["job"])
        for _ in range(self.steps_per_get):
            self._step(job)
        return self._emit_job(request, job)

    async def list_jobs(self, request: web.Request) -> web.Response:
        account = self._account(request)
        collection = request.match_info["collection"]
        self._no_query(request, frozenset({"pageSize", "pageToken", "filter", "orderBy", "readMask"}))
        items = sorted(
            (j for j in self.jobs.values() if j.account == account and j.collection == collection),
            key=lambda j: j.created_at,
            reverse=True,
        )
        page, token = self._page(request, items)
        body: dict[str, Any] = {collection: [self.job_json(j) for j in page], "totalSize": len(items)}
        if token:
            body["nextPageToken"] = token
        for item in body[collection]:
            check_model(_COLLECTIONS[collection][1], item)
        return web.json_response(body)

    async def delete_job(self, request: web.Request) -> web.Response:
        job = self._find(request, request.match_info["job"])
        del self.jobs[job.name]
        return web.json_response({})

    async def job_action(self, request: web.Request) -> web.Response:
        job_id, _, action = request.match_info["tail"].partition(":")
        if action not in ("cancel", "resume"):
            raise _bad(f"Unknown job method {action!r} (there is no pause).", 404)
        self._no_query(request)
        body = await self._json(request)
        if body != {}:
            raise _bad(f":{action} takes an empty object.")
        job = self._find(request, job_id)
        if action == "cancel":
            if job.state in _TERMINAL:
                raise ApiError(400, f"Job {job.name} is already {job.state}.")
            self._set_state(job, "JOB_STATE_CANCELLED")
        else:
            if job.state not in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_PAUSED"):
                raise ApiError(400, f"Job {job.name} cannot be resumed from {job.state}.")
            job.status, job.completed_at = None, None
            self._set_state(job, "JOB_STATE_RUNNING")
        return self._emit_job(request, job)

    # -- chat ------------------------------------------------------------------------------------
    def known_models(self) -> set[str]:
        done = {j.output_model for j in self.jobs.values() if j.state == "JOB_STATE_COMPLETED"}
        return set(self.base_models) | done

    async def chat_completion(self, request: web.Request) -> web.StreamResponse:
        self._auth(request)
        call, body = await read_chat_request(request, self.chat_calls)
        params = typing.get_args(CompletionCreateParams)[1 if call.stream else 0]
        self._params(params, body, strict_keys=False)
        if body["model"] not in self.known_models():
            raise ApiError(404, f"Model not found, inaccessible, and/or not deployed: {body['model']}")
        response = await chat_completion(request, call, body, self.chat, {})
        if not call.stream:
            check_model(CompletionCreateResponse, json.loads(bytes(call.sent)), strict_keys=False)
        return response


def _declared(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(field.alias or name for name, field in model.model_fields.items())


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def start_fake_fireworks_in_thread(**kwargs: Any) -> FakeFireworks:
    """A ``FakeFireworks`` served from a daemon thread; ``close()`` stops it."""
    return FakeFireworks(**kwargs).start_in_thread()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.fireworks_upstream --port N``."""
    run_cli(FakeFireworks, lambda fake: fake.host, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
