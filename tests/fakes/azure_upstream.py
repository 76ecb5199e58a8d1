"""A fake of Azure OpenAI's Files + Fine-tuning APIs, many resources by path prefix.

Base URL of a resource: ``http://127.0.0.1:<port>/<resource>/openai`` (``fake.base_url(res)``;
``fake.endpoint(res)`` is the SDK's ``azure_endpoint``). Both surfaces of providers.md §4 are
served over one state per resource (files and jobs belong to the resource, not to a key):

**Dated API** (``/openai/files…``, ``/openai/fine_tuning/jobs…``), checked against the
``2024-10-21`` spec as transcribed in ``tests.fakes._azure_schemas``:

- ``?api-version`` required: missing → 404 ``notFound``; not in ``api_versions`` → 400;
- file create: multipart ``purpose`` (``Files_Upload`` enum) + ``file`` only → **201** +
  ``Location``; the file is imported asynchronously: ``status`` ``pending → running →
  processed`` (or ``error`` + ``status_details`` for bad JSONL) over ``steps_per_get`` transitions
  per ``GET /files/{id}``, or ``fake.advance_file(id)``;
- job create: ``FineTuningJobCreation`` — unknown keys (``metadata``, ``method``…), ``null``
  values, ``"auto"`` hyperparameters, ``suffix`` > 40 chars or outside ``[A-Za-z0-9_-]``, a model
  with a ``.`` are rejected; the training/validation file must exist in the resource, have
  purpose ``fine-tune`` and be ``processed`` → **201** + ``Location``;
- objects: ``organisation_id``; status ``pending``/``running``/``succeeded``/``failed``/
  ``cancelled``; event level ``warning``; checkpoint ``metrics`` a number map; absent fields
  omitted (never ``null``); ``DELETE /fine_tuning/jobs/{id}`` → 204; no pause/resume (404);
- errors ``{"error": {"code": <ErrorCode>, "message"}}``.

**v1 API** (``/openai/v1/…``): ``api-version`` optional (``v1``/``preview``); OpenAI-shaped objects
validated against OpenAI's spec schemas (file ``status`` may be Azure's ``pending``/``running``,
§4.2); create body = ``CreateFineTuningJobRequest`` with unknown keys rejected, ``metadata``,
``method``, ``"auto"`` accepted; file create accepts ``expires_after``; pause/resume; list has no
``metadata`` filter (§4.2); errors ``{"error": {"code", "message", "param", "type": "error"}}``.

Both: auth by ``api-key: <key>`` or ``Authorization: Bearer <token>`` (else 401 ``unauthorized``);
violations, faults, recording, ``advance`` and the control routes as in ``tests.fakes._common``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes import _azure_schemas as dated
from tests.fakes._chat import (
    BASE_MODELS,
    ChatCall,
    ChatSettings,
    chat_completion,
    model_json,
    model_not_found,
    read_chat_request,
)
from tests.fakes._common import RECORD, ApiError, FakeServer, new_id, run_cli
from tests.fakes._files import StoredFile, receive_multipart
from tests.fakes._jobs import JobSimulator, SimJob, inspect_training_data, page
from tests.fakes._query import check_query
from tests.fakes.openai_upstream import (
    check_metadata,
    checkpoint_json,
    event_json,
    file_json,
    job_json,
    schema_error,
)
from tests.openapi_schema import component, validate

__all__ = ["FakeAzureOpenAI", "main", "start_fake_azure_in_thread"]

_STATUS_CODES = {
    400: "invalidPayload",
    401: "unauthorized",
    403: "forbidden",
    404: "notFound",
    409: "conflict",
}
_STATUS_CODES |= {429: "tooManyRequests", 500: "internalFailure", 503: "serviceUnavailable"}
_DATED_STATUS = {"validating_files": "pending", "queued": "pending", "paused": "running"}  # §8.1, reversed
_V1_VERSIONS = ("v1", "preview")
_V1_PURPOSES = ("assistants", "batch", "fine-tune", "evals")
_PAGED = [{"name": "after", "in": "query", "schema": {"type": "string"}}]
_PAGED += [{"name": "limit", "in": "query", "schema": {"type": "integer"}}]


def _v1_file_check(body: Any) -> None:
    # §4.2: v1 files carry Azure's FileState and purpose ``evals``; everything else is OpenAIFile.
    status_ok = body.get("status") in (
        "uploaded",
        "pending",
        "running",
        "processed",
        "error",
        "deleting",
        "deleted",
    )
    if not status_ok:
        raise ValueError(f"status {body.get('status')!r} not in Azure's FileState")
    purpose = "user_data" if body.get("purpose") == "evals" else body.get("purpose")
    validate("OpenAIFile", {**body, "status": "processed", "purpose": purpose})


def _v1_job_check(body: Any) -> None:
    validate("FineTuningJob", {**body, "status": "running"} if body.get("status") == "paused" else body)


def _each(check: Callable[[Any], None], wrapper: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(body: Any) -> None:
        wrapper({**body, "data": []})
        for item in body["data"]:
            check(item)

    return run


def _dated(name: str) -> Callable[[Any], None]:
    return functools.partial(dated.check, name)


def _openai(name: str) -> Callable[[Any], None]:
    return functools.partial(validate, name)


def _check_models(body: Any) -> None:
    validate("ListModelsResponse", body)


def _check_dated_model(body: Any) -> None:
    # The dated API's ``Model`` (2024-10-21): ``created_at`` (not ``created``), no ``owned_by``;
    # ``model``/``fine_tune`` only on fine-tuned models.
    required = {"id", "object", "created_at", "status", "capabilities", "lifecycle_status", "deprecation"}
    missing = required - set(body)
    if missing or body["object"] != "model" or "owned_by" in body or "created" in body:
        raise ValueError(f"not a dated-API Model: {sorted(missing) or body}")


def _check_dated_models(body: Any) -> None:
    if set(body) != {"object", "data"} or body["object"] != "list":
        raise ValueError("not a dated-API ModelList")
    for model in body["data"]:
        _check_dated_model(model)


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


class FakeAzureOpenAI(FakeServer):
    """Azure OpenAI (see the module docstring).

    ``resources``: resource names served (``None`` = any). ``api_keys``: accepted ``api-key``
    values / bearer tokens (``None`` = any non-empty). ``api_versions``: dated versions accepted.
    ``steps_per_get``: file-import and job transitions per GET of that object.
    """

    request_id_header = "apim-request-id"

    def __init__(
        self,
        *,
        resources: set[str] | None = None,
        api_keys: set[str] | None = None,
        api_versions: tuple[str, ...] = (dated.API_VERSION,),
        steps_per_get: int = 1,
        total_steps: int = 3,
        min_examples: int = 1,
    ) -> None:
        super().__init__(steps_per_get=steps_per_get)
        self.resources = resources
        self.api_keys = api_keys
        self.api_versions = api_versions
        self.files: dict[str, StoredFile] = {}
        self.chat = ChatSettings()
        """How chat completions are answered (``tests.fakes._chat``)."""
        self.chat_calls: list[ChatCall] = []
        self.deployments: set[str] | None = None
        """Deployment names served on the dated chat path (``None`` = any)."""
        self.base_models: tuple[str, ...] = BASE_MODELS
        self.sim = JobSimulator(
            self.clock,
            org="azure",
            make_result_file=self._result_file,
            total_steps=total_steps,
            min_examples=min_examples,
            name_model=lambda job: (
                f"{job.model}.ft-{job.id[-24:]}" + (f"-{job.suffix}" if job.suffix else "")
            ),
        )

    def base_url(self, resource: str) -> str:
        return f"{self.host}/{resource}/openai"

    def endpoint(self, resource: str) -> str:
        """``azure_endpoint`` for ``openai.AzureOpenAI`` (which appends ``/openai``)."""
        return f"{self.host}/{resource}"

    def v1_base_url(self, resource: str) -> str:
        return f"{self.host}/{resource}/openai/v1"

    @property
    def jobs(self) -> dict[str, SimJob]:
        return self.sim.jobs

    def job_count(self) -> int:
        return len(self.sim.jobs)

    def advance(self, job_id: str, to: str | None = None, steps: int = 1) -> str:
        def run() -> str:
            job = self.sim.jobs.get(job_id)
            if job is None:
                raise KeyError(f"no job {job_id!r}")
            return self.sim.advance(job, to, steps)

        result: str = self.call(run)
        return result

    def advance_file(self, file_id: str, steps: int = 2) -> str:
        """Move a file's import on (``pending → running → processed|error``); returns its status."""

        def run() -> str:
            stored = self.files[file_id]
            for _ in range(steps):
                self._step_file(stored)
            return stored.status

        result: str = self.call(run)
        return result

    # -- routing -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        routes: list[web.RouteDef] = []
        for surface, prefix in (("dated", "/{resource}/openai"), ("v1", "/{resource}/openai/v1")):
            bind = functools.partial
            actions = "cancel" if surface == "dated" else "cancel|pause|resume"
            routes += [
                web.post(f"{prefix}/files", bind(self.create_file, surface)),
                web.get(f"{prefix}/files", bind(self.list_files, surface)),
                web.get(prefix + "/files/{id}", bind(self.get_file, surface)),
                web.delete(prefix + "/files/{id}", bind(self.delete_file, surface)),
                web.get(prefix + "/files/{id}/content", bind(self.file_content, surface)),
                web.post(f"{prefix}/fine_tuning/jobs", bind(self.create_job, surface)),
                web.get(f"{prefix}/fine_tuning/jobs", bind(self.list_jobs, surface)),
                web.get(prefix + "/fine_tuning/jobs/{id}", bind(self.get_job, surface)),
                web.post(
                    f"{prefix}/fine_tuning/jobs/{{id}}/{{action:{actions}}}", bind(self.job_action, surface)
                ),
                web.get(prefix + "/fine_tuning/jobs/{id}/events", bind(self.list_events, surface)),
                web.get(prefix + "/fine_tuning/jobs/{id}/checkpoints", bind(self.list_checkpoints, surface)),
            ]
            routes += [
                web.get(f"{prefix}/models", bind(self.list_models, surface)),
                web.get(prefix + "/models/{model}", bind(self.get_model, surface)),
            ]
        routes.append(web.delete("/{resource}/openai/fine_tuning/jobs/{id}", self.delete_job))
        routes.append(
            web.post(
                "/{resource}/openai/deployments/{deployment}/chat/completions", self.dated_chat_completion
            )
        )
        routes.append(web.post("/{resource}/openai/v1/chat/completions", self.v1_chat_completion))
        app.add_routes(routes)

    def render_error(self, request: web.Request, error: ApiError) -> web.Response:
        code = error.code if error.code in dated.ERROR_CODES else None
        code = code or ("unexpectedEntityState" if error.code == "invalid_state" else None)
        code = code or _STATUS_CODES.get(error.status, "internalFailure")
        if "/openai/v1/" in request.path or request.path.endswith("/openai/v1"):
            body: dict[str, Any] = {
                "error": {
                    "code": error.code or code,
                    "message": error.message,
                    "param": error.param,
                    "type": "error",
                }
            }
        else:
            body = {"error": {"code": code, "message": error.message}}
            dated.check("ErrorResponse", body)
        return web.json_response(body, status=error.status, headers=error.headers)

    def _context(
        self, request: web.Request, surface: str, parameters: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Checks resource, auth and ``api-version``, then the query; returns the query."""
        resource = request.match_info["resource"]
        if self.resources is not None and resource not in self.resources:
            raise ApiError(404, f"Resource '{resource}' not found.", violation=True)
        token = request.headers.get("api-key", "").strip()
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        token = token or (bearer.strip() if scheme == "Bearer" else "")
        if not token:
            raise ApiError(401, "Access denied: missing api-key header or bearer token.", violation=True)
        if self.api_keys is not None and token not in self.api_keys:
            raise ApiError(401, "Access denied due to invalid subscription key or wrong API endpoint.")
        version = request.query.get("api-version")
        if surface == "dated" and version is None:
            raise ApiError(404, "Resource not found (the dated API requires ?api-version=).", violation=True)
        allowed = self.api_versions if surface == "dated" else _V1_VERSIONS
        if version is not None and version not in allowed:
            message = f"API version '{version}' is not supported here; use one of {', '.join(allowed)}."
            raise ApiError(400, message, param="api-version", violation=True)
        query = [(k, v) for k, v in request.query.items() if k != "api-version"]
        result = check_query(query, parameters)
        result["_resource"] = resource
        return result

    def _location(self, request: web.Request, kind: str, object_id: str) -> dict[str, str]:
        resource = request.match_info["resource"]
        version = request.query.get("api-version", "")
        return {"Location": f"{self.base_url(resource)}/{kind}/{object_id}?api-version={version}"}

    # -- chat and models -----------------------------------------------------------------------
    async def dated_chat_completion(self, request: web.Request) -> web.StreamResponse:
        """``/deployments/{deployment}/chat/completions?api-version=``: the deployment names the
        model (a body ``model`` is allowed and ignored, as Azure does)."""
        self._context(request, "dated", [])
        deployment = request.match_info["deployment"]
        if self.deployments is not None and deployment not in self.deployments:
            raise ApiError(
                404,
                "The API deployment for this resource does not exist.",
                code="DeploymentNotFound",
            )
        call, body = await read_chat_request(request, self.chat_calls, default_model=deployment)
        body = {**body, "model": deployment}
        return await chat_completion(request, call, body, self.chat, {"apim-request-id": new_id("")})

    async def v1_chat_completion(self, request: web.Request) -> web.StreamResponse:
        """``/openai/v1/chat/completions``: the body's ``model`` names the deployment."""
        self._context(request, "v1", [])
        call, body = await read_chat_request(request, self.chat_calls)
        return await chat_completion(request, call, body, self.chat, {"apim-request-id": new_id("")})

    def _models(self, resource: str, surface: str) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = []
        for name in self.base_models:
            models.append({"id": name, "created_at": 1721172741, "base": None, "job": None})
        for job in self.sim.jobs.values():
            if job.owner == resource and job.fine_tuned_model:
                created = job.finished_at or job.created_at
                models.append(
                    {"id": job.fine_tuned_model, "created_at": created, "base": job.model, "job": job.id}
                )
        out = []
        for m in models:
            if surface == "v1":
                out.append(
                    model_json(m["id"], m["created_at"], "organization-owner" if m["job"] else "system")
                )
                continue
            item = {
                "id": m["id"],
                "object": "model",
                "created_at": m["created_at"],
                "status": "succeeded",
                "lifecycle_status": "generally-available",
                "capabilities": {"chat_completion": True, "fine_tune": m["job"] is None, "inference": True},
                "deprecation": {"inference": m["created_at"] + 365 * 86400},
            }
            if m["job"]:
                item |= {"model": m["base"], "fine_tune": m["job"]}
            out.append(item)
        return out

    async def list_models(self, surface: str, request: web.Request) -> web.Response:
        resource = self._context(request, surface, [])["_resource"]
        body = {"object": "list", "data": self._models(resource, surface)}
        check = _check_models if surface == "v1" else _check_dated_models
        return self.emit(request, body, check)

    async def get_model(self, surface: str, request: web.Request) -> web.Response:
        resource = self._context(request, surface, [])["_resource"]
        wanted = request.match_info["model"]
        for model in self._models(resource, surface):
            if model["id"] == wanted:
                return self.emit(request, model, _openai("Model") if surface == "v1" else _check_dated_model)
        raise model_not_found(wanted)

    # -- files ---------------------------------------------------------------------------------
    async def create_file(self, surface: str, request: web.Request) -> web.Response:
        resource = self._context(request, surface, [])["_resource"]
        v1 = surface == "v1"
        extra = {"expires_after[anchor]", "expires_after[seconds]"} if v1 else set()
        destination = self.temp_path()
        upload = await receive_multipart(request, destination, allowed=frozenset({"file", "purpose", *extra}))
        request[RECORD].form, request[RECORD].file_bytes = dict(upload.fields), upload.size
        purposes = _V1_PURPOSES if v1 else dated.FILE_PURPOSES
        if upload.fields.get("purpose") not in purposes:
            message = (
                f"Invalid 'purpose': {upload.fields.get('purpose')!r}; expected one of {', '.join(purposes)}."
            )
            raise ApiError(400, message, param="purpose", violation=True)
        if upload.path is None or not upload.filename:
            raise ApiError(400, "A 'file' part with a filename is required.", param="file", violation=True)
        now = self.clock.now()
        stored = StoredFile(
            new_id("file-"),
            resource,
            upload.filename,
            upload.fields["purpose"],
            upload.size,
            now,
            destination,
        )
        stored.status = "pending"
        if v1 and any(k.startswith("expires_after") for k in upload.fields):
            seconds = upload.fields.get("expires_after[seconds]", "")
            anchor = upload.fields.get("expires_after[anchor]")
            expires: dict[str, Any] = {
                "anchor": anchor,
                "seconds": int(seconds) if seconds.isdigit() else seconds,
            }
            try:
                validate("FileExpirationAfter", expires)
            except Exception as exc:
                raise schema_error(exc) from exc
            stored.expires_at = now + int(seconds)
        self.files[stored.id] = stored
        if v1:
            return self.emit(request, file_json(stored), _v1_file_check)
        headers = self._location(request, "files", stored.id)
        return self.emit(request, self._dated_file(stored), _dated("File"), status=201, headers=headers)

    async def list_files(self, surface: str, request: web.Request) -> web.Response:
        purpose = (
            {"enum": [*dated.FILE_PURPOSES, "batch_output"]} if surface == "dated" else {"type": "string"}
        )
        query = self._context(request, surface, [{"name": "purpose", "in": "query", "schema": purpose}])
        files = [f for f in self.files.values() if f.owner == query["_resource"]]
        files = [f for f in files if "purpose" not in query or f.purpose == query["purpose"]]
        files.sort(key=lambda f: f.created_at, reverse=True)
        if surface == "dated":
            listing = {"object": "list", "data": [self._dated_file(f) for f in files]}
            return self.emit(request, listing, _dated("FileList"))
        data = [file_json(f) for f in files]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        body = {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}
        return self.emit(request, body, _each(_v1_file_check, _openai("ListFilesResponse")))

    async def get_file(self, surface: str, request: web.Request) -> web.Response:
        stored = self._file(request, surface)
        for _ in range(self.steps_per_get):
            self._step_file(stored)
        if surface == "v1":
            return self.emit(request, file_json(stored), _v1_file_check)
        return self.emit(request, self._dated_file(stored), _dated("File"))

    async def delete_file(self, surface: str, request: web.Request) -> web.Response:
        stored = self._file(request, surface)
        del self.files[stored.id]
        stored.path.unlink(missing_ok=True)
        body = {"object": "file", "id": stored.id, "deleted": True}
        return self.emit(
            request, body, _openai("DeleteFileResponse") if surface == "v1" else _dated("FileDelete")
        )

    async def file_content(self, surface: str, request: web.Request) -> web.StreamResponse:
        stored = self._file(request, surface)
        return web.FileResponse(stored.path, headers={"Content-Type": "application/octet-stream"})

    def _file(self, request: web.Request, surface: str) -> StoredFile:
        resource = self._context(request, surface, [])["_resource"]
        stored = self.files.get(request.match_info["id"])
        if stored is None or stored.owner != resource:
            raise ApiError(404, f"File with id '{request.match_info['id']}' not found.", param="file_id")
        return stored

    def _step_file(self, stored: StoredFile) -> None:
        if stored.status == "pending":
            stored.status = "running"
        elif stored.status == "running":
            problem = inspect_training_data(stored.path)[2] if stored.purpose == "fine-tune" else None
            stored.status = "error" if problem else "processed"
            stored.status_details = problem

    @staticmethod
    def _dated_file(stored: StoredFile) -> dict[str, Any]:
        body = {k: v for k, v in file_json(stored).items() if k != "expires_at"}
        return _drop_none({**body, "status_details": stored.status_details})

    def _result_file(self, job: SimJob) -> str:
        path = self.temp_path()
        path.write_text(
            "step,train_loss\n"
            + "".join(f"{c.step_number},{c.metrics['train_loss']}\n" for c in job.checkpoints)
        )
        stored = StoredFile(
            new_id("file-"),
            job.owner,
            "results.csv",
            "fine-tune-results",
            path.stat().st_size,
            self.clock.now(),
            path,
        )
        self.files[stored.id] = stored
        return stored.id

    # -- jobs ----------------------------------------------------------------------------------
    async def create_job(self, surface: str, request: web.Request) -> web.Response:
        resource = self._context(request, surface, [])["_resource"]
        body = request[RECORD].json
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", violation=True)
        known = (
            dated.DATED_CREATE_FIELDS
            if surface == "dated"
            else set(component("CreateFineTuningJobRequest")["properties"])
        )
        for key in body:
            if key not in known:
                raise ApiError(400, f"Unknown field '{key}' in the request body.", param=key, violation=True)
        try:
            dated.check("FineTuningJobCreation", body) if surface == "dated" else validate(
                "CreateFineTuningJobRequest", body
            )
        except Exception as exc:
            raise schema_error(exc) from exc
        if "." in str(body["model"]):
            raise ApiError(
                400,
                f"Model '{body['model']}' is not an Azure model id (no dots).",
                param="model",
                violation=True,
            )
        check_metadata(body.get("metadata"))
        training = self._job_file(resource, body["training_file"], "training_file")
        if body.get("validation_file") is not None:
            self._job_file(resource, body["validation_file"], "validation_file")
        job = self.sim.create(resource, body, training.path)
        if surface == "v1":
            return self.emit(request, self._v1_job(job), _v1_job_check)
        headers = self._location(request, "fine_tuning/jobs", job.id)
        return self.emit(request, self._dated_job(job), _dated("FineTuningJob"), status=201, headers=headers)

    def _job_file(self, resource: str, file_id: Any, param: str) -> StoredFile:
        stored = self.files.get(str(file_id))
        if stored is None or stored.owner != resource:
            raise ApiError(400, f"The file '{file_id}' does not exist.", param=param, violation=True)
        if stored.purpose != "fine-tune":
            raise ApiError(
                400, f"The file '{file_id}' has purpose '{stored.purpose}'.", param=param, violation=True
            )
        if stored.status != "processed":
            message = (
                f"The file '{file_id}' is not processed yet (status '{stored.status}'); wait for 'processed'."
            )
            raise ApiError(400, message, param=param, violation=True)
        return stored

    async def list_jobs(self, surface: str, request: web.Request) -> web.Response:
        query = self._context(request, surface, _PAGED)
        jobs = [j for j in self.sim.jobs.values() if j.owner == query["_resource"]]
        chunk, more = page(jobs, query.get("after"), query.get("limit", 20), key=lambda j: j.id)
        if surface == "v1":
            body = {"object": "list", "data": [self._v1_job(j) for j in chunk], "has_more": more}
            return self.emit(
                request, body, _each(_v1_job_check, _openai("ListPaginatedFineTuningJobsResponse"))
            )
        body = {"object": "list", "data": [self._dated_job(j) for j in chunk], "has_more": more}
        return self.emit(request, body, _dated("FineTuningJobList"))

    async def get_job(self, surface: str, request: web.Request) -> web.Response:
        job = self._job(request, surface, [])[0]
        self.sim.advance(job, steps=self.steps_per_get)
        return self._emit_job(request, surface, job)

    async def job_action(self, surface: str, request: web.Request) -> web.Response:
        job = self._job(request, surface, [])[0]
        action = request.match_info["action"]
        {"cancel": self.sim.cancel, "pause": self.sim.pause, "resume": self.sim.resume}[action](job)
        return self._emit_job(request, surface, job)

    async def delete_job(self, request: web.Request) -> web.Response:
        job = self._job(request, "dated", [])[0]
        if not job.terminal:
            raise ApiError(
                400, f"Job {job.id} is {job.status}; only finished jobs can be deleted.", code="invalid_state"
            )
        del self.sim.jobs[job.id]
        return web.Response(status=204)

    async def list_events(self, surface: str, request: web.Request) -> web.Response:
        job, query = self._job(request, surface, _PAGED)
        chunk, more = page(job.events, query.get("after"), query.get("limit", 20), key=lambda e: e.id)
        if surface == "v1":
            body = {"object": "list", "data": [event_json(e) for e in chunk], "has_more": more}
            return self.emit(request, body, _openai("ListFineTuningJobEventsResponse"))
        data = []
        for event in chunk:
            item = {**event_json(event), "level": "warning" if event.level == "warn" else event.level}
            data.append(_drop_none({**item, "data": event.data}))
        return self.emit(
            request, {"object": "list", "data": data, "has_more": more}, _dated("FineTuningJobEventList")
        )

    async def list_checkpoints(self, surface: str, request: web.Request) -> web.Response:
        job, query = self._job(request, surface, _PAGED)
        chunk, more = page(job.checkpoints, query.get("after"), query.get("limit", 10), key=lambda c: c.id)
        data = [checkpoint_json(c, job.id) for c in chunk]
        if surface == "v1":
            first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
            body = {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}
            return self.emit(request, body, _openai("ListFineTuningJobCheckpointsResponse"))
        body = {"object": "list", "data": data, "has_more": more}
        return self.emit(request, body, _dated("FineTuningJobCheckpointList"))

    def _job(
        self, request: web.Request, surface: str, parameters: list[dict[str, Any]]
    ) -> tuple[SimJob, dict[str, Any]]:
        query = self._context(request, surface, parameters)
        return self.sim.get(query["_resource"], request.match_info["id"]), query

    def _emit_job(self, request: web.Request, surface: str, job: SimJob) -> web.Response:
        if surface == "v1":
            return self.emit(request, self._v1_job(job), _v1_job_check)
        return self.emit(request, self._dated_job(job), _dated("FineTuningJob"))

    @staticmethod
    def _v1_job(job: SimJob) -> dict[str, Any]:
        body = job_json(job, organization=job.owner)
        return {**body, "metadata": body["metadata"] or {}}  # §4.2: v1 marks metadata required

    @staticmethod
    def _dated_job(job: SimJob) -> dict[str, Any]:
        error = _drop_none(job.error) if job.error is not None else None
        return _drop_none(
            {
                "object": "fine_tuning.job",
                "id": job.id,
                "created_at": job.created_at,
                "status": _DATED_STATUS.get(job.status, job.status),
                "model": job.model,
                "fine_tuned_model": job.fine_tuned_model,
                "training_file": job.training_file,
                "validation_file": job.validation_file,
                "result_files": list(job.result_files),
                "finished_at": job.finished_at,
                "organisation_id": job.owner,
                "trained_tokens": job.trained_tokens,
                "error": error,
                "estimated_finish": job.estimated_finish,
                "hyperparameters": job.concrete_hyperparameters(),
                "suffix": job.suffix,
                "seed": job.seed,
            }
        )


def start_fake_azure_in_thread(port: int = 0, **options: Any) -> FakeAzureOpenAI:
    """A :class:`FakeAzureOpenAI` served from a daemon thread; call ``.close()`` when done."""
    return FakeAzureOpenAI(**options).start_in_thread(port)


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeAzureOpenAI, lambda fake: f"{fake.host}/<resource>/openai", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
