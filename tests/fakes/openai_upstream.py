"""A fake of OpenAI's Files + Fine-tuning API under ``/v1`` that checks what it receives.

Every request is checked against OpenAI's spec (``tests/oracles/openai-openapi.yaml`` through
``tests.openapi_schema``) and providers.md §1; anything a correct gateway would never send is
answered with OpenAI's 400/401 envelope ``{"error": {message, type, param, code}}`` **and**
appended to ``fake.violations``:

- auth: ``Authorization: Bearer <key>`` (§1.1; ``api_keys`` restricts which keys are valid);
- query strings: the operation's declared ``parameters`` only, types coerced and validated,
  ``limit`` ≥ 1, ``metadata[k]=v`` deepObject (§1.2);
- ``POST /files``: multipart fields ``CreateFileRequest`` (``additionalProperties: false``; purpose
  enum; ``file`` required, with a filename; ``expires_after`` object), and ``.jsonl`` for
  ``fine-tune`` (§1.3);
- ``POST /fine_tuning/jobs``: ``CreateFineTuningJobRequest`` plus unknown top-level keys rejected
  (§1.5 "extra fields not permitted"), metadata ≤ 16 pairs / key ≤ 64 / value ≤ 512 chars, and
  ``training_file``/``validation_file`` must be ``fine-tune`` files this API key uploaded
  (param ``training_file``/``validation_file``);
- ``cancel``/``pause``/``resume`` take no body.

Every JSON response is validated against its spec schema (``OpenAIFile``, ``DeleteFileResponse``,
``ListFilesResponse``, ``FineTuningJob``, ``ListPaginatedFineTuningJobsResponse``,
``ListFineTuningJobEventsResponse``, ``ListFineTuningJobCheckpointsResponse``, ``ErrorResponse``).
One documented exception: ``status: "paused"`` (§1.6: the pause example returns it, the enum
lacks it) is checked as if it were ``running``.

Jobs progress per ``tests.fakes._jobs`` (``validating_files → queued → running → succeeded``;
``failed`` on bad JSONL): each ``GET /fine_tuning/jobs/{id}`` performs ``steps_per_get``
transitions (0 = only explicit ``fake.advance(job_id, to=…)``), and each listing page performs
``steps_per_list`` on every job it holds (0 by default). Objects belong to the API key that
created them; another key gets 404.

Use: ``async with``-free — ``fake = FakeOpenAI(); await fake.start(); fake.base_url`` …
``await fake.stop()``; or ``start_fake_openai_in_thread()`` … ``fake.close()``; or
``python -m tests.fakes.openai_upstream --port N``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

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
from tests.fakes._jobs import Checkpoint, Event, JobSimulator, SimJob, page
from tests.fakes._query import check_query
from tests.openapi_schema import component, spec, validate

__all__ = ["FakeOpenAI", "main", "start_fake_openai_in_thread"]

_FILE_FIELDS = frozenset({"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"})


def _check(schema: str) -> Callable[[Any], None]:
    return lambda body: validate(schema, body)


def _check_job(body: Any) -> None:
    # providers.md §1.6: "paused" is returned by pause but missing from the spec's status enum.
    if isinstance(body, dict) and body.get("status") == "paused":
        body = {**body, "status": "running"}
    validate("FineTuningJob", body)


def _check_job_list(body: Any) -> None:
    validate("ListPaginatedFineTuningJobsResponse", {**body, "data": []})
    for job in body["data"]:
        _check_job(job)


def schema_error(exc: Exception) -> ApiError:
    """A ``jsonschema.ValidationError`` as OpenAI's 400 (``param`` = the offending top-level key)."""
    path = list(getattr(exc, "absolute_path", []))
    param = str(path[0]) if path else None
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    message = getattr(exc, "message", str(exc))
    return ApiError(
        400, f"Invalid request: {where + ': ' if where else ''}{message}", param=param, violation=True
    )


def check_metadata(metadata: Any) -> None:
    """providers.md §1.5: ≤ 16 pairs, keys ≤ 64 chars, values ≤ 512 chars (spec prose, not schema)."""
    if not isinstance(metadata, dict):
        return
    if len(metadata) > 16:
        raise ApiError(
            400, "Invalid 'metadata': at most 16 key-value pairs.", param="metadata", violation=True
        )
    for key, value in metadata.items():
        if len(key) > 64 or len(str(value)) > 512:
            raise ApiError(
                400,
                f"Invalid 'metadata' entry {key!r}: key ≤ 64, value ≤ 512 chars.",
                param="metadata",
                violation=True,
            )


def file_json(stored: StoredFile) -> dict[str, Any]:
    """An ``OpenAIFile`` (providers.md §1.3)."""
    body: dict[str, Any] = {
        "id": stored.id,
        "object": "file",
        "bytes": stored.bytes,
        "created_at": stored.created_at,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": stored.status,
    }
    if stored.expires_at is not None:
        body["expires_at"] = stored.expires_at
    return body


def job_json(job: SimJob, organization: str) -> dict[str, Any]:
    """A ``FineTuningJob`` (providers.md §1.6) for a simulated job."""
    hyper = job.resolved_hyperparameters()
    method_type = str((job.method or {}).get("type", "supervised"))
    sub = dict((job.method or {}).get(method_type) or {})
    sub["hyperparameters"] = {**(sub.get("hyperparameters") or {}), **hyper}
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": organization,
        "result_files": list(job.result_files),
        "status": job.status,
        "validation_file": job.validation_file,
        "training_file": job.training_file,
        "hyperparameters": hyper,
        "trained_tokens": job.trained_tokens,
        "error": copy.deepcopy(job.error),
        "seed": job.seed,
        "estimated_finish": job.estimated_finish,
        "integrations": copy.deepcopy(job.integrations),
        "metadata": dict(job.metadata) if job.metadata is not None else None,
        "method": {"type": method_type, method_type: sub},
        "user_provided_suffix": job.suffix,
    }


def event_json(event: Event) -> dict[str, Any]:
    """A ``FineTuningJobEvent`` (providers.md §1.7); ``data`` is ``{}`` for plain messages."""
    return {
        "object": "fine_tuning.job.event",
        "id": event.id,
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": copy.deepcopy(event.data) if event.data is not None else {},
    }


def checkpoint_json(checkpoint: Checkpoint, job_id: str) -> dict[str, Any]:
    """A ``FineTuningJobCheckpoint`` (providers.md §1.7)."""
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.id,
        "created_at": checkpoint.created_at,
        "fine_tuned_model_checkpoint": checkpoint.model,
        "fine_tuning_job_id": job_id,
        "step_number": checkpoint.step_number,
        "metrics": dict(checkpoint.metrics),
    }


class FakeOpenAI(FakeServer):
    """OpenAI under ``/v1`` (see the module docstring for what is checked).

    ``api_keys``: accepted keys (``None`` = any non-empty bearer token). ``steps_per_get``: job
    transitions per job GET; ``steps_per_list``: per job on a listing page. ``total_steps``:
    training steps (each a metrics event + checkpoint). ``min_examples``: examples a training file
    needs (OpenAI's documented floor is 10, §2.4).
    """

    def __init__(
        self,
        *,
        api_keys: set[str] | None = None,
        steps_per_get: int = 1,
        steps_per_list: int = 0,
        total_steps: int = 3,
        min_examples: int = 1,
        organization: str = "org-fake",
    ) -> None:
        super().__init__(steps_per_get=steps_per_get)
        self.steps_per_list = steps_per_list
        self.api_keys = api_keys
        self.organization = organization
        self.files: dict[str, StoredFile] = {}
        self.chat = ChatSettings()
        """How chat completions are answered (``tests.fakes._chat``)."""
        self.chat_calls: list[ChatCall] = []
        self.base_models: tuple[str, ...] = BASE_MODELS
        self.sim = JobSimulator(
            self.clock,
            org="fake-org",
            make_result_file=self._result_file,
            total_steps=total_steps,
            min_examples=min_examples,
        )

    @property
    def base_url(self) -> str:
        return f"{self.host}/v1"

    @property
    def jobs(self) -> dict[str, SimJob]:
        """Every job created (all keys) — ``len(fake.jobs)`` is "how many provider jobs"."""
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

    # -- routing -------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.post("/v1/files", self.create_file),
                web.get("/v1/files", self.list_files),
                web.get("/v1/files/{id}", self.get_file),
                web.delete("/v1/files/{id}", self.delete_file),
                web.get("/v1/files/{id}/content", self.file_content),
                web.post("/v1/fine_tuning/jobs", self.create_job),
                web.get("/v1/fine_tuning/jobs", self.list_jobs),
                web.get("/v1/fine_tuning/jobs/{id}", self.get_job),
                web.post("/v1/fine_tuning/jobs/{id}/{action:cancel|pause|resume}", self.job_action),
                web.get("/v1/fine_tuning/jobs/{id}/events", self.list_events),
                web.get("/v1/fine_tuning/jobs/{id}/checkpoints", self.list_checkpoints),
                web.post("/v1/chat/completions", self.chat_completion),
                web.get("/v1/models", self.list_models),
                web.get("/v1/models/{model}", self.get_model),
            ]
        )

    def render_error(self, request: web.Request, error: ApiError) -> web.Response:
        body = {
            "error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
        }
        validate("ErrorResponse", body)
        return web.json_response(body, status=error.status, headers=error.headers)

    def _owner(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme != "Bearer" or not key.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                violation=True,
            )
        if self.api_keys is not None and key not in self.api_keys:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return key

    def _query(self, request: web.Request, path: str, method: str) -> dict[str, Any]:
        parameters = spec()["paths"][path][method].get("parameters", [])
        return check_query(list(request.query.items()), parameters)

    # -- chat and models ---------------------------------------------------------------------
    async def chat_completion(self, request: web.Request) -> web.StreamResponse:
        self._owner(request)
        call, body = await read_chat_request(request, self.chat_calls)
        return await chat_completion(request, call, body, self.chat, {"x-request-id": new_id("req_")})

    def models(self, owner: str) -> list[dict[str, Any]]:
        """The base models, then the fine-tuned model of each succeeded job of ``owner``."""
        models = [model_json(m, 1721172741, "system") for m in self.base_models]
        for job in self.sim.jobs.values():
            if job.owner == owner and job.fine_tuned_model:
                models.append(
                    model_json(job.fine_tuned_model, job.finished_at or job.created_at, self.organization)
                )
        return models

    async def list_models(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        return self.emit(
            request, {"object": "list", "data": self.models(owner)}, _check("ListModelsResponse")
        )

    async def get_model(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        wanted = request.match_info["model"]
        for model in self.models(owner):
            if model["id"] == wanted:
                return self.emit(request, model, _check("Model"))
        raise model_not_found(wanted)

    # -- files ---------------------------------------------------------------------------------
    async def create_file(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        self._query(request, "/files", "post")
        destination = self.temp_path()
        upload = await receive_multipart(request, destination, allowed=_FILE_FIELDS)
        record = request[RECORD]
        record.form, record.file_bytes = dict(upload.fields), upload.size
        instance: dict[str, Any] = {
            k: v for k, v in upload.fields.items() if not k.startswith("expires_after")
        }
        if upload.path is not None:
            instance["file"] = "<binary>"
        expires = {
            k[len("expires_after[") : -1]: v
            for k, v in upload.fields.items()
            if k.startswith("expires_after")
        }
        if expires:
            seconds = expires.get("seconds")
            instance["expires_after"] = {
                **expires,
                **({"seconds": int(seconds)} if seconds and seconds.isdigit() else {}),
            }
        try:
            validate("CreateFileRequest", instance)
        except Exception as exc:
            raise schema_error(exc) from exc
        if not upload.filename:
            raise ApiError(400, "The 'file' part has no filename.", param="file", violation=True)
        if instance["purpose"] == "fine-tune" and not upload.filename.endswith(".jsonl"):
            raise ApiError(
                400, "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file", violation=True
            )
        now = self.clock.now()
        stored = StoredFile(
            id=new_id("file-"),
            owner=owner,
            filename=upload.filename,
            purpose=instance["purpose"],
            bytes=upload.size,
            created_at=now,
            path=destination,
            expires_at=now + instance["expires_after"]["seconds"] if "expires_after" in instance else None,
        )
        self.files[stored.id] = stored
        return self.emit(request, file_json(stored), _check("OpenAIFile"))

    async def list_files(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        query = self._query(request, "/files", "get")
        files = sorted((f for f in self.files.values() if f.owner == owner), key=lambda f: f.created_at)
        if "purpose" in query:
            files = [f for f in files if f.purpose == query["purpose"]]
        if query.get("order") == "asc":
            files.reverse()  # page() serves newest first from an oldest-first list
        chunk, more = page(files, query.get("after"), query.get("limit", 10000), key=lambda f: f.id)
        data = [file_json(f) for f in chunk]
        body = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
        return self.emit(request, body, _check("ListFilesResponse"))

    async def get_file(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        return self.emit(request, file_json(stored), _check("OpenAIFile"))

    async def delete_file(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        del self.files[stored.id]
        stored.path.unlink(missing_ok=True)
        return self.emit(
            request, {"id": stored.id, "object": "file", "deleted": True}, _check("DeleteFileResponse")
        )

    async def file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request)
        return web.FileResponse(stored.path, headers={"Content-Type": "application/octet-stream"})

    def _file(self, request: web.Request) -> StoredFile:
        owner = self._owner(request)
        self._query(request, "/files/{file_id}", "get")
        stored = self.files.get(request.match_info["id"])
        if stored is None or stored.owner != owner:
            raise ApiError(404, f"No such File object: {request.match_info['id']}", param="id")
        return stored

    def _result_file(self, job: SimJob) -> str:
        path = self.temp_path()
        rows = ["step,train_loss,train_accuracy"]
        rows += [
            f"{c.step_number},{c.metrics['train_loss']},{c.metrics['train_mean_token_accuracy']}"
            for c in job.checkpoints
        ]
        path.write_text("\n".join(rows) + "\n")
        stored = StoredFile(
            new_id("file-"),
            job.owner,
            "step_metrics.csv",
            "fine-tune-results",
            path.stat().st_size,
            self.clock.now(),
            path,
        )
        self.files[stored.id] = stored
        return stored.id

    # -- jobs ----------------------------------------------------------------------------------
    async def create_job(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        self._query(request, "/fine_tuning/jobs", "post")
        body = request[RECORD].json
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", violation=True)
        known = set(component("CreateFineTuningJobRequest")["properties"])
        for key in body:
            if key not in known:
                raise ApiError(
                    400, f"Unrecognized request argument supplied: {key}", param=key, violation=True
                )
        try:
            validate("CreateFineTuningJobRequest", body)
        except Exception as exc:
            raise schema_error(exc) from exc
        check_metadata(body.get("metadata"))
        training = self._job_file(owner, body["training_file"], "training_file")
        if body.get("validation_file") is not None:
            self._job_file(owner, body["validation_file"], "validation_file")
        job = self.sim.create(owner, body, training.path)
        return self.emit(request, job_json(job, self.organization), _check_job)

    def _job_file(self, owner: str, file_id: Any, param: str) -> StoredFile:
        stored = self.files.get(str(file_id))
        if stored is None or stored.owner != owner:
            raise ApiError(
                400, f"Invalid file ID: {file_id}", param=param, code="invalid_file_id", violation=True
            )
        if stored.purpose != "fine-tune":
            raise ApiError(
                400,
                f"File {file_id} has purpose '{stored.purpose}', expected 'fine-tune'.",
                param=param,
                violation=True,
            )
        return stored

    async def list_jobs(self, request: web.Request) -> web.Response:
        owner = self._owner(request)
        query = self._query(request, "/fine_tuning/jobs", "get")
        jobs = [j for j in self.sim.jobs.values() if j.owner == owner]
        if "metadata" in query:
            wanted = query["metadata"]
            if wanted is None:
                jobs = [j for j in jobs if not j.metadata]
            else:
                jobs = [j for j in jobs if all((j.metadata or {}).get(k) == v for k, v in wanted.items())]
        chunk, more = page(jobs, query.get("after"), query.get("limit", 20), key=lambda j: j.id)
        for job in chunk:
            self.sim.advance(job, steps=self.steps_per_list)
        body = {"object": "list", "data": [job_json(j, self.organization) for j in chunk], "has_more": more}
        return self.emit(request, body, _check_job_list)

    async def get_job(self, request: web.Request) -> web.Response:
        job = self._job(request, "/fine_tuning/jobs/{fine_tuning_job_id}", "get")
        self.sim.advance(job, steps=self.steps_per_get)
        return self.emit(request, job_json(job, self.organization), _check_job)

    async def job_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        job = self._job(request, f"/fine_tuning/jobs/{{fine_tuning_job_id}}/{action}", "post")
        if await request.read() not in (b"", b"{}"):
            raise ApiError(400, f"POST .../{action} takes no body.", violation=True)
        {"cancel": self.sim.cancel, "pause": self.sim.pause, "resume": self.sim.resume}[action](job)
        return self.emit(request, job_json(job, self.organization), _check_job)

    async def list_events(self, request: web.Request) -> web.Response:
        path = "/fine_tuning/jobs/{fine_tuning_job_id}/events"
        job = self._job(request, path, "get")
        query = self._query(request, path, "get")
        chunk, more = page(job.events, query.get("after"), query.get("limit", 20), key=lambda e: e.id)
        data = [event_json(e) for e in chunk]
        return self.emit(
            request,
            {"object": "list", "data": data, "has_more": more},
            _check("ListFineTuningJobEventsResponse"),
        )

    async def list_checkpoints(self, request: web.Request) -> web.Response:
        path = "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"
        job = self._job(request, path, "get")
        query = self._query(request, path, "get")
        chunk, more = page(job.checkpoints, query.get("after"), query.get("limit", 10), key=lambda c: c.id)
        data = [checkpoint_json(c, job.id) for c in chunk]
        body = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
        return self.emit(request, body, _check("ListFineTuningJobCheckpointsResponse"))

    def _job(self, request: web.Request, path: str, method: str) -> SimJob:
        owner = self._owner(request)
        if not path.endswith(("/events", "/checkpoints")):
            self._query(request, path, method)
        return self.sim.get(owner, request.match_info["id"])


def start_fake_openai_in_thread(port: int = 0, **options: Any) -> FakeOpenAI:
    """A :class:`FakeOpenAI` served from a daemon thread; call ``.close()`` when done."""
    return FakeOpenAI(**options).start_in_thread(port)


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeOpenAI, lambda fake: f"{fake.host}/v1", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
