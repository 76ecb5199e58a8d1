"""`LocalProvider`: fine-tuning by the gateway's own trainer, behind the same `Provider`
interface as OpenAI's adapter — its state shared by every replica.

Every call answers from the metadata database (`LocalStore`: jobs, events, checkpoints, files)
and the blob store (file bytes, checkpoint and model tars, result files), so any server replica
on the same database and blob store serves any local job. Work goes through a `Dispatcher`
(`_dispatch`): validation and training run in a `LocalJobRunner` (`_runner`) in this process
(`InProcessDispatcher`, the default) or on worker machines. Cancel and pause are updates of the
job row (status + `control`); the runner training the job, wherever it is, reacts at its next
poll. Resume queues the job again. Chat models come from their model blob, extracted once into
`<root>/cache/<job>`.

Built without a store (`LocalProvider(LocalSettings(root))`, as in tests and tools), the provider
opens its own: an SQLite file `<root>/local.db` and blobs under `<root>/blobs`. The server binds
the gateway's database and blob store instead (`bind`) before `start()`.

Base models live in `<root>/models` (`tunegate-tiny` is built there on first use); trainer
scratch in `<root>/work`. A legacy installation's `<root>/jobs` and `<root>/files` (the
file-based layout of earlier releases) are imported once at start (`_legacy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import string
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.server.blobs import BlobStore, LocalBlobStore
from tunegate.server.errors import FailedPrecondition, InvalidArgument, NotFound
from tunegate.server.providers._openai import TAG_KEY
from tunegate.server.providers.interface import (
    Account,
    Capability,
    JobObject,
    Page,
    ProviderDownload,
    ProviderFile,
)
from tunegate.server.providers.local._blobio import download_dir, upload_chunks
from tunegate.server.providers.local._dispatch import (
    DEFAULT_MEMORY_MB,
    Dispatcher,
    InProcessDispatcher,
    Needs,
    needs_of,
)
from tunegate.server.providers.local._model import ensure_base_model
from tunegate.server.providers.local._runner import (
    INTERRUPTED,
    RESULT_PREFIX,
    LocalJobRunner,
    RunnerSettings,
    fail_job,
    info_event,
)
from tunegate.server.providers.local._state import (
    NATIVE_JOB_PREFIX,
    fine_tuned_model_name,
    job_not_found,
    page_of,
    short_id,
)
from tunegate.server.store import Database, LocalFileRecord, LocalStore

__all__ = ["LocalProvider", "LocalSettings", "SchedulerSettings"]

BASE_MODEL = "tunegate-tiny"
BASE_MODEL_CREATED = 1795324477
"""When `tunegate-tiny` was defined (its weights are built deterministically from that
definition), in Unix seconds: the `created` of its `model` object."""
BASE_MODEL_OWNER = "tunegate"
FILE_PREFIX = "file-local-"
_ALPHABET = string.ascii_letters + string.digits
_ACTIVE = frozenset({"validating_files", "queued", "running"})
_WAIT_STEP = 0.02


def _random(length: int = 20) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", code="file_not_found", param="file_id")


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """`concurrency`: trainers at once (in-process dispatcher). `cancel_grace`: SIGTERM → SIGKILL
    delay on cancel. `stop_grace`: how long a server stop waits for trainers to pause.
    `pause_wait`: how long pause/cancel wait for an in-process trainer to stop. `poll_interval`:
    how often a running trainer's files and its job row are read. `python`: the interpreter that
    runs trainers. `env`: extra environment for trainers (e.g. thread counts)."""

    concurrency: int = 1
    cancel_grace: float = 3.0
    stop_grace: float = 10.0
    pause_wait: float = 30.0
    poll_interval: float = 0.5
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """Where this machine keeps local scratch, caches and base models, and how jobs run."""

    root: Path
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    worker: str | None = None
    """This machine's name in a job row's `worker` column; by default `<host>:<root>`, stable
    across restarts, so a restarted server recovers the jobs it was running (and only those)."""

    @property
    def worker_name(self) -> str:
        return self.worker or f"{socket.gethostname()}:{Path(self.root).resolve()}"

    def runner(self) -> RunnerSettings:
        s = self.scheduler
        return RunnerSettings(
            work_dir=Path(self.root) / "work",
            models_dir=Path(self.root) / "models",
            cancel_grace=s.cancel_grace,
            stop_grace=s.stop_grace,
            poll_interval=s.poll_interval,
            python=s.python,
            env=s.env,
            worker=self.worker_name,
        )


class LocalProvider:
    """`Provider` for the gateway's own trainer (routing name `local`, no credential)."""

    name: str = "local"
    capabilities: frozenset[Capability] = frozenset(
        {
            Capability.FILES,
            Capability.CREATE,
            Capability.RETRIEVE,
            Capability.LIST,
            Capability.CANCEL,
            Capability.PAUSE,
            Capability.RESUME,
            Capability.EVENTS,
            Capability.CHECKPOINTS,
            Capability.TAG_LOOKUP,
            Capability.RESULT_FILES,
        }
    )
    pages_by_id = True

    def __init__(
        self,
        settings: LocalSettings,
        *,
        store: LocalStore | None = None,
        blobs: BlobStore | None = None,
        dispatcher: Dispatcher | None = None,
        clock: Any = time.time,
    ) -> None:
        self.settings = settings
        self.root = Path(settings.root)
        self.models_dir = self.root / "models"
        self.cache_dir = self.root / "cache"
        self._store = store
        self._blobs = blobs
        self.dispatcher = dispatcher
        self._own_database: Database | None = None
        self._clock = clock
        self._started = False
        self._start_lock = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def bind(self, store: LocalStore, blobs: BlobStore, dispatcher: Dispatcher | None = None) -> None:
        """Use the gateway's database and blob store (before `start`)."""
        if self._started:
            raise RuntimeError("bind() must come before start()")
        self._store, self._blobs = store, blobs
        if dispatcher is not None:
            self.dispatcher = dispatcher

    @property
    def unbound(self) -> bool:
        """Whether no store was given yet and the provider has not started (so `bind` may)."""
        return self._store is None and not self._started

    @property
    def store(self) -> LocalStore:
        if self._store is None:
            raise RuntimeError("the local provider has not started")
        return self._store

    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:
            raise RuntimeError("the local provider has not started")
        return self._blobs

    def runner(self) -> LocalJobRunner:
        """A runner over this provider's store and blob store (what a dispatcher calls)."""
        return LocalJobRunner(self.store, self.blobs, self.settings.runner())

    async def start(self) -> None:
        """Open the store (when not bound), import legacy state, start the dispatcher (which
        recovers the jobs a previous server left behind)."""
        async with self._start_lock:
            if self._started:
                return
            for path in (self.models_dir, self.root / "work", self.cache_dir):
                path.mkdir(parents=True, exist_ok=True)
            if self._store is None or self._blobs is None:
                self._own_database = await Database.open(f"sqlite:///{self.root / 'local.db'}")
                self._store, self._blobs = self._own_database.local, LocalBlobStore(self.root / "blobs")
            from tunegate.server.providers.local._legacy import import_legacy

            await import_legacy(self.root, self.store, self.blobs)
            if self.dispatcher is None:
                self.dispatcher = InProcessDispatcher(
                    self.runner(), self.settings.scheduler.concurrency, recover=self._unfinished
                )
            await self.dispatcher.start()
            if not isinstance(self.dispatcher, InProcessDispatcher):
                await self._submit_waiting(self.dispatcher)
            self._started = True

    async def _submit_waiting(self, dispatcher: Dispatcher) -> None:
        """Hand a queue every job still waiting for validation or a trainer: a server that
        stopped between recording a job and queueing it left it unqueued. A queue takes a job
        that already waits in it only once; `running` jobs are the queue's own (a dead worker's
        job goes back to it when its heartbeats stop)."""
        for record in await self.store.unfinished():
            if record.status == "validating_files":
                await dispatcher.submit_validate(record.id)
            elif record.status == "queued":
                await dispatcher.submit_train(record.id, needs_of(record.body))

    async def _unfinished(self) -> list[tuple[str, str, Needs]]:
        """What the in-process dispatcher recovers at start: the jobs this machine was running
        (those without a checkpoint fail `interrupted` at once; the others go first, as they did
        before the restart), then every job waiting for validation or a trainer."""
        running: list[tuple[str, str, Needs]] = []
        waiting: list[tuple[str, str, Needs]] = []
        for record in await self.store.unfinished():
            if record.status != "running":
                waiting.append((record.id, record.status, needs_of(record.body)))
            elif record.worker in (None, self.settings.worker_name):
                if await self.store.checkpoints(record.id):
                    running.append((record.id, record.status, needs_of(record.body)))
                else:
                    error = {"code": "interrupted", "message": INTERRUPTED, "param": None}
                    await fail_job(self.store, record.id, error, expect=("running",))
        return running + waiting

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            if self.dispatcher is not None:
                await self.dispatcher.aclose()
            if self._own_database is not None:
                await self._own_database.close()
                self._own_database = None
                self._store = self._blobs = None

    def _dispatch(self) -> Dispatcher:
        assert self.dispatcher is not None  # set by start()
        return self.dispatcher

    # -- files --------------------------------------------------------------------------------

    async def _file(self, file_id: str) -> LocalFileRecord:
        """A provider file's record; `file_not_found` for anything else (result files are not
        provider files)."""
        if file_id.startswith(RESULT_PREFIX) or not file_id.startswith(FILE_PREFIX):
            raise _file_not_found(file_id)
        record = await self.store.get_file(file_id)
        if record is None:
            raise _file_not_found(file_id)
        return record

    async def _result_key(self, file_id: str) -> str:
        job_id = f"{NATIVE_JOB_PREFIX}-{file_id[len(RESULT_PREFIX) :]}"
        record = await self.store.get_job(job_id)
        if record is None or record.result_blob_key is None:
            raise _file_not_found(file_id)
        return record.result_blob_key

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        await self.start()
        file_id = FILE_PREFIX + _random(24)
        key, written = await upload_chunks(self.blobs, chunks)
        record = LocalFileRecord(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=written,
            created_at=int(self._clock()),
            blob_key=key,
        )
        try:
            await self.store.insert_file(record)
        except BaseException:
            await self.blobs.delete(key)
            raise
        return ProviderFile(id=file_id, status="processed")

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        await self.start()
        if file_id.startswith(RESULT_PREFIX):
            await self._result_key(file_id)
        else:
            await self._file(file_id)
        return ProviderFile(id=file_id, status="processed")

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        await self.start()
        if file_id.startswith(RESULT_PREFIX):
            return ProviderDownload(
                filename="step_metrics.csv",
                purpose="fine-tune-results",
                content_type="text/csv",
                chunks=self.blobs.open_reader(await self._result_key(file_id)),
            )
        record = await self._file(file_id)
        return ProviderDownload(
            filename=record.filename,
            purpose=record.purpose,
            content_type="application/octet-stream",
            chunks=self.blobs.open_reader(record.blob_key),
        )

    # -- jobs ---------------------------------------------------------------------------------

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        """The base model must be `tunegate-tiny` or `local:<directory>` that exists outside the
        gateway's data directory (which holds every owner's tuned weights: those are reached
        through their `ft:` names, by their owner only)."""
        _check_needs(request.get("provider_options"))
        model = str(request.get("model") or "")
        if model == BASE_MODEL:
            return
        if model.startswith("local:"):
            path = Path(model[len("local:") :]).expanduser()
            if path.resolve().is_relative_to(self.root.parent.resolve()):
                raise InvalidArgument(
                    f"Model {model!r}: a base model cannot come from the gateway's data directory.",
                    code="model_not_available",
                    param="model",
                )
            if path.is_dir():
                return
            raise InvalidArgument(
                f"Model {model!r}: directory {str(path)!r} does not exist.",
                code="model_not_available",
                param="model",
            )
        raise InvalidArgument(
            f"The local provider cannot fine-tune {model!r}: use '{BASE_MODEL}' or 'local:<path to a "
            "Hugging Face model directory>'.",
            code="model_not_available",
            param="model",
        )

    async def create_job(self, account: Account, request: Mapping[str, Any], *, tag: str) -> JobObject:
        await self.start()
        for param in ("training_file", "validation_file"):
            file_id = request.get(param)
            if file_id and (
                str(file_id).startswith(RESULT_PREFIX) or await self.store.get_file(str(file_id)) is None
            ):
                raise InvalidArgument(f"No such File object: {file_id}", code="file_not_found", param=param)
        job_id = f"{NATIVE_JOB_PREFIX}-{_random()}"
        method = dict(request.get("method") or {"type": "supervised"})
        kind = str(method.get("type") or "supervised")
        if kind not in ("supervised", "dpo"):
            raise InvalidArgument(
                f"The local provider does not support method '{kind}'.",
                code="unsupported_method",
                param="method.type",
            )
        if (
            request.get("hyperparameters")
            and kind == "supervised"
            and not (method.get(kind) or {}).get("hyperparameters")
        ):
            method[kind] = {"hyperparameters": dict(request["hyperparameters"])}
        hyper = dict((method.get(kind) or {}).get("hyperparameters") or {})
        seed = request.get("seed")
        job: JobObject = {
            "object": "fine_tuning.job",
            "id": job_id,
            "created_at": int(self._clock()),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": {
                "n_epochs": hyper.get("n_epochs", "auto"),
                "batch_size": hyper.get("batch_size", "auto"),
                "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto"),
            },
            "model": request["model"],
            "organization_id": "local",
            "result_files": [],
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": request["training_file"],
            "validation_file": request.get("validation_file"),
            "integrations": None,
            "seed": int(seed) if seed is not None else secrets.randbelow(2**31),
            "estimated_finish": None,
            "method": method,
            "metadata": {**dict(request.get("metadata") or {}), TAG_KEY: tag},
        }
        if request.get("suffix"):
            job["user_provided_suffix"] = request["suffix"]
        needs = _check_needs(request.get("provider_options"))
        if needs != Needs():  # what the job asks of a worker's machine (`needs_of`)
            job["provider_options"] = {"device": needs.device, "memory_mb": needs.memory_mb}
        await self.store.insert_job(job, tag=tag)
        await self.store.add_events(job_id, [info_event(f"Created fine-tuning job: {job_id}")])
        await self._dispatch().submit_validate(job_id)
        return await self._job(job_id)

    async def find_job_by_tag(self, account: Account, tag: str, *, created_after: int) -> JobObject | None:
        await self.start()
        record = await self.store.find_by_tag(tag)
        return None if record is None else record.body

    async def get_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        return await self._job(job_id)

    async def _job(self, job_id: str) -> JobObject:
        record = await self.store.get_job(job_id)
        if record is None:
            raise job_not_found(job_id)
        return record.body

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page:
        await self.start()
        listed = await self.store.list_jobs(limit=limit, after=page_token)
        if listed is None:
            raise _invalid_cursor(str(page_token))
        data, has_more = listed
        return Page(data=data, has_more=has_more, next_token=data[-1]["id"] if data and has_more else None)

    async def cancel_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        fields = {"status": "cancelled", "finished_at": int(self._clock()), "estimated_finish": None}
        record = await self.store.update_job(
            job_id, fields, expect=_ACTIVE | {"paused"}, control="cancel", event=info_event("Job cancelled")
        )
        if record is None:
            raise _invalid_state(await self._job(job_id), "cancel")
        await self._until_stopped(job_id)
        return record.body

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        fields = {"status": "paused", "estimated_finish": None}
        record = await self.store.update_job(
            job_id, fields, expect=("queued", "running"), control="pause", event=info_event("Job paused")
        )
        if record is None:
            raise _invalid_state(await self._job(job_id), "pause")
        await self._until_stopped(job_id)
        return record.body

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        record = await self.store.update_job(
            job_id, {"status": "queued"}, expect=("paused",), control=None, event=info_event("Job resumed")
        )
        if record is None:
            raise _invalid_state(await self._job(job_id), "resume")
        await self._dispatch().submit_train(job_id, needs_of(record.body))
        return record.body

    async def _until_stopped(self, job_id: str) -> None:
        """With the in-process dispatcher, wait (at most `pause_wait`) until this process's trainer
        of the job has stopped, as callers of a single server expect. Elsewhere the store is the
        truth: the runner that trains the job reacts at its next poll."""
        running = getattr(self.dispatcher, "is_running", None)
        if running is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.scheduler.pause_wait):
                while running(job_id):  # noqa: ASYNC110  # the dispatcher has no per-job event
                    await asyncio.sleep(_WAIT_STEP)

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        await self.start()
        await self._job(job_id)
        short = short_id(job_id)
        before = None
        if page_token:
            prefix = f"ftevent-{short}-"
            if not page_token.startswith(prefix) or not page_token[len(prefix) :].isdigit():
                raise _invalid_cursor(page_token)
            before = int(page_token[len(prefix) :])
        rows = await self.store.events(job_id, limit=limit + 1, before=before)
        data: list[JobObject] = []
        for row in rows[:limit]:
            event: JobObject = {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{short}-{row.seq}",
                "created_at": row.created_at,
                "level": row.level,
                "message": row.message,
                "type": row.type,
            }
            if row.data is not None:
                event["data"] = row.data
            data.append(event)
        has_more = len(rows) > limit
        return Page(data=data, has_more=has_more, next_token=data[-1]["id"] if data and has_more else None)

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        await self.start()
        job = await self._job(job_id)
        short = short_id(job_id)
        model = fine_tuned_model_name(job)
        items: list[JobObject] = [
            {
                "object": "fine_tuning.job.checkpoint",
                "id": f"ftckpt-{short}-{c.seq}",
                "created_at": c.created_at,
                "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{c.step}",
                "fine_tuning_job_id": job_id,
                "step_number": c.step,
                "metrics": c.metrics,
            }
            for c in await self.store.checkpoints(job_id)
        ]
        return page_of(items, limit=limit, page_token=page_token)

    # -- serving ------------------------------------------------------------------------------

    async def model_dir(self, fine_tuned_model: str) -> tuple[str, Path] | None:
        """The native job id and model directory of a succeeded job's `ft:` model, else None."""
        await self.start()
        if not fine_tuned_model.startswith("ft:"):
            return None
        job_id = f"{NATIVE_JOB_PREFIX}-{fine_tuned_model.rsplit(':', 1)[-1]}"
        record = await self.store.get_job(job_id)
        if record is None or record.model_blob_key is None:
            return None
        job = record.body
        if job.get("status") != "succeeded" or job.get("fine_tuned_model") != fine_tuned_model:
            return None
        target = self.cache_dir / job_id
        if not target.is_dir():
            await download_dir(self.blobs, record.model_blob_key, target)
        return job_id, target

    async def base_model_dir(self, model: str) -> Path | None:
        """The directory of base model `model` for chat (`tunegate-tiny`, built on first use),
        or None for any other name: `local:<directory>` models are for training only."""
        if model != BASE_MODEL:
            return None
        return await asyncio.to_thread(ensure_base_model, self.models_dir)

    def base_models(self) -> list[JobObject]:
        """The models `create_job` fine-tunes by name, as OpenAI `model` objects
        (`local:<directory>` models are named by path and not listed)."""
        return [
            {"id": BASE_MODEL, "object": "model", "created": BASE_MODEL_CREATED, "owned_by": BASE_MODEL_OWNER}
        ]

    async def fine_tuned_model(self, job_id: str) -> JobObject | None:
        """The `model` object of native job `job_id`'s `ft:` model if the job succeeded, else
        None. `owned_by` is the organization segment of the name (the job's `organization_id`)."""
        await self.start()
        record = await self.store.get_job(job_id)
        job = None if record is None else record.body
        if job is None or job.get("status") != "succeeded" or not job.get("fine_tuned_model"):
            return None
        return {
            "id": str(job["fine_tuned_model"]),
            "object": "model",
            "created": int(job.get("finished_at") or job["created_at"]),
            "owned_by": str(job.get("organization_id") or "local"),
        }


def _check_needs(options: Any) -> Needs:
    """The machine a job asks for in `provider_options` (`device`: `cpu`, `cuda` or `any`;
    `memory_mb`: a positive integer), both optional; `InvalidArgument` naming the bad one."""
    options = options if isinstance(options, Mapping) else {}
    device = options.get("device", "any")
    if device not in ("cpu", "cuda", "any"):
        raise InvalidArgument(
            f"provider_options.device must be 'cpu', 'cuda' or 'any', got {device!r}.",
            code="invalid_value",
            param="provider_options.device",
        )
    memory_mb = options.get("memory_mb", DEFAULT_MEMORY_MB)
    if isinstance(memory_mb, float) and memory_mb.is_integer():
        memory_mb = int(memory_mb)  # JSON numbers arrive as floats through a gRPC Struct
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 1:
        raise InvalidArgument(
            f"provider_options.memory_mb must be a positive integer, got {memory_mb!r}.",
            code="invalid_value",
            param="provider_options.memory_mb",
        )
    return Needs(device=device, memory_mb=memory_mb)


def _invalid_state(job: JobObject, operation: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"Cannot {operation} job {job['id']}: it is {job['status']}.",
        code="invalid_state",
        param="fine_tuning_job_id",
    )


def _invalid_cursor(token: str) -> InvalidArgument:
    return InvalidArgument(
        f"Invalid cursor {token!r}: not an id from this list.", code="invalid_cursor", param="after"
    )
