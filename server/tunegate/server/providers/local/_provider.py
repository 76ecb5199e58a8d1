"""`LocalProvider`: fine-tuning on this machine, behind the same `Provider` interface as
OpenAI's adapter.

State lives under `<root>` (the server's `<data_dir>/local`)::

    files/<native id>        copies of gateway files (`upload_file`: streamed, fsynced, renamed)
    files/<native id>.json   their metadata (filename, purpose, bytes, created_at)
    jobs/<native id>/        one directory per job (see `_jobdir`)
    models/                  base models (`tunegate-tiny` is built there on first use)

Jobs run through `_scheduler.Scheduler` (validation, bounded worker pool, worker processes,
restart recovery). The adapter answers OpenAI JSON with native ids (`ftjob-local-…`,
`file-local-…`), like any other provider; the registry above maps them to gateway ids. A job is
tagged with the gateway job id in `metadata` (`TAG_KEY`), found again by `find_job_by_tag`.

`start()` must run once before serving (the server's start-up does it; any call does it lazily
too), `aclose()` stops the workers — their jobs resume at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import string
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from tunegate.server.providers.local._scheduler import RESULT_PREFIX, Scheduler, SchedulerSettings
from tunegate.server.providers.local._state import NATIVE_JOB_PREFIX, JobTable, page_of

__all__ = ["LocalProvider", "LocalSettings"]

BASE_MODEL = "tunegate-tiny"
BASE_MODEL_CREATED = 1795324477
"""When `tunegate-tiny` was defined (its weights are built deterministically from that
definition), in Unix seconds: the `created` of its `model` object."""
BASE_MODEL_OWNER = "tunegate"
FILE_PREFIX = "file-local-"
_ALPHABET = string.ascii_letters + string.digits
_CHUNK = 256 * 1024
_ACTIVE = frozenset({"validating_files", "queued", "running"})


def _random(length: int = 20) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", code="file_not_found", param="file_id")


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """Where local state lives and how jobs run (see `SchedulerSettings`)."""

    root: Path
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)


class LocalProvider:
    """`Provider` for the on-machine trainer (routing name `local`, no credential)."""

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

    def __init__(self, settings: LocalSettings, *, clock: Any = time.time) -> None:
        self.settings = settings
        self.root = Path(settings.root)
        self.files_dir = self.root / "files"
        self.models_dir = self.root / "models"
        self._table = JobTable(self.root / "jobs", clock=clock)
        self._clock = clock
        self.scheduler = Scheduler(
            self._table, models_dir=self.models_dir, file_path=self.file_path, settings=settings.scheduler
        )
        self._started = False
        self._start_lock = asyncio.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the jobs, settle those a previous server left behind, start queued work."""
        async with self._start_lock:
            if self._started:
                return
            for path in (self.files_dir, self.models_dir):
                path.mkdir(parents=True, exist_ok=True)
            for leftover in self.files_dir.glob(".tmp-*"):
                leftover.unlink(missing_ok=True)
            self._table.load()
            await self.scheduler.recover()
            self._started = True

    async def aclose(self) -> None:
        if self._started:
            await self.scheduler.aclose()

    # -- files --------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        """Where a native file's bytes are (a result file lives in its job's directory)."""
        if file_id.startswith(RESULT_PREFIX):
            job_id = f"{NATIVE_JOB_PREFIX}-{file_id[len(RESULT_PREFIX) :]}"
            return self._table.dir(job_id).metrics
        if not file_id.startswith(FILE_PREFIX) or not file_id[len(FILE_PREFIX) :].isalnum():
            raise _file_not_found(file_id)
        return self.files_dir / file_id

    async def upload_file(
        self, account: Account, *, filename: str, purpose: str, size: int, chunks: AsyncIterator[bytes]
    ) -> ProviderFile:
        await self.start()
        file_id = FILE_PREFIX + _random(24)
        tmp = self.files_dir / f".tmp-{file_id}"
        stream = await asyncio.to_thread(tmp.open, "wb")
        try:
            written = 0
            async for chunk in chunks:
                await asyncio.to_thread(stream.write, chunk)
                written += len(chunk)
            await asyncio.to_thread(_close_synced, stream)
            meta = {
                "filename": filename,
                "purpose": purpose,
                "bytes": written,
                "created_at": int(self._clock()),
            }
            (self.files_dir / f"{file_id}.json").write_text(json.dumps(meta))
            os.replace(tmp, self.files_dir / file_id)
        except BaseException:
            stream.close()
            tmp.unlink(missing_ok=True)
            raise
        return ProviderFile(id=file_id, status="processed")

    async def get_file(self, account: Account, file_id: str) -> ProviderFile:
        await self.start()
        if not self.file_path(file_id).is_file():
            raise _file_not_found(file_id)
        return ProviderFile(id=file_id, status="processed")

    async def download_file(self, account: Account, file_id: str) -> ProviderDownload:
        await self.start()
        path = self.file_path(file_id)
        if not path.is_file():
            raise _file_not_found(file_id)
        if file_id.startswith(RESULT_PREFIX):
            return ProviderDownload(
                filename="step_metrics.csv",
                purpose="fine-tune-results",
                content_type="text/csv",
                chunks=_read(path),
            )
        meta = json.loads((self.files_dir / f"{file_id}.json").read_text())
        return ProviderDownload(
            filename=str(meta["filename"]),
            purpose=str(meta["purpose"]),
            content_type="application/octet-stream",
            chunks=_read(path),
        )

    # -- jobs ---------------------------------------------------------------------------------

    def check_request(self, account: Account, request: Mapping[str, Any]) -> None:
        """The base model must be `tunegate-tiny` or `local:<directory>` that exists outside the
        gateway's data directory (which holds every owner's tuned weights: those are reached
        through their `ft:` names, by their owner only)."""
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
            if file_id and not self.file_path(str(file_id)).is_file():
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
            "created_at": self._table.now(),
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
        self._table.add(job)
        self._table.event(job_id, f"Created fine-tuning job: {job_id}")
        self.scheduler.validate(job_id)
        return self._table.get(job_id)

    async def find_job_by_tag(self, account: Account, tag: str, *, created_after: int) -> JobObject | None:
        await self.start()
        for job in self._table.newest_first():
            if (job.get("metadata") or {}).get(TAG_KEY) == tag:
                return dict(job)
        return None

    async def get_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        return self._table.get(job_id)

    async def list_jobs(self, account: Account, *, limit: int, page_token: str | None) -> Page:
        await self.start()
        return page_of(self._table.newest_first(), limit=limit, page_token=page_token)

    async def cancel_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        job = self._table.get(job_id)
        if job["status"] not in _ACTIVE | {"paused"}:
            raise _invalid_state(job, "cancel")
        await self.scheduler.cancel(job_id)
        return self._table.get(job_id)

    async def pause_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        job = self._table.get(job_id)
        if job["status"] not in ("queued", "running"):
            raise _invalid_state(job, "pause")
        await self.scheduler.pause(job_id)
        return self._table.get(job_id)

    async def resume_job(self, account: Account, job_id: str) -> JobObject:
        await self.start()
        job = self._table.get(job_id)
        if job["status"] != "paused":
            raise _invalid_state(job, "resume")
        await self.scheduler.resume(job_id)
        return self._table.get(job_id)

    async def list_events(self, account: Account, job_id: str, *, limit: int, page_token: str | None) -> Page:
        await self.start()
        self._table.get(job_id)
        return page_of(self._table.events(job_id), limit=limit, page_token=page_token)

    async def list_checkpoints(
        self, account: Account, job_id: str, *, limit: int, page_token: str | None
    ) -> Page:
        await self.start()
        self._table.get(job_id)
        return page_of(self._table.checkpoints(job_id), limit=limit, page_token=page_token)

    # -- serving ------------------------------------------------------------------------------

    async def model_dir(self, fine_tuned_model: str) -> tuple[str, Path] | None:
        """The native job id and model directory of a succeeded job's `ft:` model, else None."""
        await self.start()
        if not fine_tuned_model.startswith("ft:"):
            return None
        job_id = f"{NATIVE_JOB_PREFIX}-{fine_tuned_model.rsplit(':', 1)[-1]}"
        job = self._table.peek(job_id)
        if job is None or job.get("status") != "succeeded" or job.get("fine_tuned_model") != fine_tuned_model:
            return None
        return job_id, self._table.dir(job_id).model

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
        job = self._table.peek(job_id)
        if job is None or job.get("status") != "succeeded" or not job.get("fine_tuned_model"):
            return None
        return {
            "id": str(job["fine_tuned_model"]),
            "object": "model",
            "created": int(job.get("finished_at") or job["created_at"]),
            "owned_by": str(job.get("organization_id") or "local"),
        }


def _invalid_state(job: JobObject, operation: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"Cannot {operation} job {job['id']}: it is {job['status']}.",
        code="invalid_state",
        param="fine_tuning_job_id",
    )


def _close_synced(stream: Any) -> None:
    stream.flush()
    os.fsync(stream.fileno())
    stream.close()


async def _read(path: Path) -> AsyncIterator[bytes]:
    stream = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(stream.read, _CHUNK):
            yield chunk
    finally:
        with contextlib.suppress(OSError):
            stream.close()
