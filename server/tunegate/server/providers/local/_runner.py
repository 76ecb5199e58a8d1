"""`LocalJobRunner`: one machine's side of a local job, everything else in the shared store.

Theory of operation (statuses are OpenAI's)::

    validating_files ──data ok──▶ queued ──train()──▶ running ──outcome──▶ succeeded | failed
          │ bad data ─▶ failed        │                 │ pause ─▶ paused ──resume──▶ queued
          └── cancel (any non-terminal status) ─▶ cancelled ◀──────────┘

- `validate(job_id)`: the job's files are fetched from the blob store into the scratch
  directory and checked (`_data.validate_file`, in a thread); a broken rule fails the job.
- `train(job_id)`: scratch `<work_dir>/<job>` gets the inputs (and, when the job has
  checkpoints, the newest one, so the trainer resumes there), then the trainer subprocess
  (`python -m tunegate.server.providers.local.worker <scratch>`, its own session) runs. Every
  `poll_interval` the runner copies its new events into the job's log, its progress into
  `estimated_finish`, each new checkpoint directory into a tar blob + a `local_checkpoints`
  row, and reads the job row: `cancelled` → control `cancel`, SIGTERM, SIGKILL after
  `cancel_grace`; `paused` → control `pause` (the trainer checkpoints and exits). On exit the
  outcome settles the job: the model directory and `step_metrics.csv` become blobs.
- Idempotent: a terminal, paused or cancelled job returns at once; a `running` job (its
  previous worker died) resumes from its newest checkpoint blob, or fails `interrupted`.
- Cancellation of the calling task (server stop) asks the trainer to pause (leaving a
  checkpoint, uploaded before returning), kills it after `stop_grace`, leaves the status
  `running` and re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.server.blobs import BlobStore
from tunegate.server.providers.interface import JobObject
from tunegate.server.providers.local._blobio import download_dir, download_file, upload_dir, upload_file
from tunegate.server.providers.local._jobdir import JobDir, read_json, read_jsonl, write_json
from tunegate.server.providers.local._state import fine_tuned_model_name, short_id
from tunegate.server.store import LocalStore

__all__ = [
    "INTERRUPTED",
    "RESULT_PREFIX",
    "LocalJobRunner",
    "RunnerSettings",
    "fail_job",
    "info_event",
    "result_file_id",
]

logger = logging.getLogger("tunegate.server")

WORKER_MODULE = "tunegate.server.providers.local.worker"
RESULT_PREFIX = "file-local-result-"
CANCEL, PAUSE = "cancel", "pause"
INTERRUPTED = (
    "The gateway stopped while this job was running, and it left no checkpoint to resume from. "
    "Create the job again."
)


def result_file_id(job_id: str) -> str:
    """The native id of a job's `step_metrics.csv`."""
    return RESULT_PREFIX + short_id(job_id)


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """`work_dir`: scratch space (one directory per job being validated or trained).
    `models_dir`: base models. `cancel_grace`: SIGTERM → SIGKILL delay on cancel. `stop_grace`:
    how long a shutdown waits for the trainer to pause. `poll_interval`: how often the trainer's
    files and the job row are read. `python`/`env`: the trainer's interpreter and extra
    environment. `worker`: this machine's name in the job row."""

    work_dir: Path
    models_dir: Path
    cancel_grace: float = 3.0
    stop_grace: float = 10.0
    poll_interval: float = 0.5
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)
    worker: str = field(default_factory=socket.gethostname)


def error_event(message: str) -> dict[str, Any]:
    return {"created_at": int(time.time()), "level": "error", "message": message, "type": "message"}


def info_event(message: str) -> dict[str, Any]:
    return {"created_at": int(time.time()), "level": "info", "message": message, "type": "message"}


async def fail_job(
    store: LocalStore, job_id: str, error: Mapping[str, Any], *, expect: tuple[str, ...]
) -> bool:
    """Fail the job (when in an `expect`ed status) with `error` and an error event."""
    fields = {
        "status": "failed",
        "error": {"code": error.get("code"), "message": error.get("message"), "param": error.get("param")},
        "finished_at": int(time.time()),
        "estimated_finish": None,
    }
    event = error_event(f"Fine-tuning job failed: {error.get('message')}")
    return await store.update_job(job_id, fields, expect=expect, control=None, event=event) is not None


@dataclass
class _Tail:
    """How far the trainer's files have been copied into the store."""

    events_offset: int = 0
    checkpoints_offset: int = 0
    uploaded: set[str] = field(default_factory=set)


class LocalJobRunner:
    """Implements `_dispatch.JobRunner` over a `LocalStore` and a `BlobStore`."""

    def __init__(self, store: LocalStore, blobs: BlobStore, settings: RunnerSettings) -> None:
        self._store = store
        self._blobs = blobs
        self.settings = settings

    # -- validation -----------------------------------------------------------------------------

    async def validate(self, job_id: str) -> bool:
        from tunegate.server.providers.local._data import DataError, validate_file

        record = await self._store.get_job(job_id)
        if record is None or record.status != "validating_files":
            return False
        job = record.body
        method = str((job.get("method") or {}).get("type") or "supervised")
        await self._store.add_events(
            job_id, [info_event(f"Validating training file: {job['training_file']}")]
        )
        scratch = self.settings.work_dir / f"validate-{job_id}"
        reports: dict[str, Any] = {}
        try:
            for param in ("training_file", "validation_file"):
                file_id = job.get(param)
                if file_id:
                    path = await self._fetch_file(str(file_id), scratch)
                    reports[param] = await asyncio.to_thread(validate_file, path, method, param=param)  # type: ignore[arg-type]
        except DataError as exc:
            message = exc.message
            if exc.line is not None and str(exc.line) not in message:
                message = f"{message} (line {exc.line})"
            error = {"code": exc.code, "message": message, "param": exc.param}
            await fail_job(self._store, job_id, error, expect=("validating_files",))
            return False
        except Exception as exc:
            logger.exception("validating local job %s failed", job_id)
            error = {"code": "validation_error", "message": str(exc), "param": "training_file"}
            await fail_job(self._store, job_id, error, expect=("validating_files",))
            return False
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        hyperparameters = _resolve(job, reports["training_file"].examples)
        method_body = dict(job.get("method") or {"type": method})
        method_body[method] = {**dict(method_body.get(method) or {}), "hyperparameters": hyperparameters}
        fields = {
            "status": "queued",
            "hyperparameters": {k: v for k, v in hyperparameters.items() if k != "beta"},
            "method": method_body,
        }
        event = info_event("Files validated, moving job to queued state")
        updated = await self._store.update_job(job_id, fields, expect=("validating_files",), event=event)
        return updated is not None

    async def _fetch_file(self, file_id: str, scratch: Path) -> Path:
        record = await self._store.get_file(file_id)
        if record is None:
            raise FileNotFoundError(f"No such File object: {file_id}")
        target = scratch / "inputs" / file_id
        if not target.is_file():
            await download_file(self._blobs, record.blob_key, target)
        return target

    # -- training -------------------------------------------------------------------------------

    async def train(self, job_id: str) -> None:
        store = self._store
        record = await store.get_job(job_id)
        if record is None or record.status not in ("queued", "running"):
            return
        checkpoints = await store.checkpoints(job_id)
        if record.status == "running":
            if not checkpoints:
                error = {"code": "interrupted", "message": INTERRUPTED, "param": None}
                await fail_job(store, job_id, error, expect=("running",))
                return
            await store.add_events(
                job_id, [info_event("The gateway restarted; the job will resume from its last checkpoint")]
            )
        resume = bool(checkpoints)
        claimed = await store.update_job(  # one runner per job: the claim is a status transition
            job_id,
            {"status": "running"},
            expect=(record.status,),
            worker=self.settings.worker,
            event=info_event("Fine-tuning job resumed" if resume else "Fine-tuning job started"),
        )
        if claimed is None:
            return  # cancelled, paused or taken meanwhile
        scratch = JobDir(self.settings.work_dir / job_id)
        tail = _Tail()
        try:
            await asyncio.to_thread(shutil.rmtree, scratch.path, True)
            scratch.path.mkdir(parents=True)
            if resume:
                tail = await self._restore(scratch, checkpoints[0])
            spec = await self._spec(record.body, scratch, resume=resume)
            write_json(scratch.spec, spec)
            with scratch.log.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    self.settings.python,
                    "-m",
                    WORKER_MODULE,
                    str(scratch.path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C at the terminal reaches the server only
                    env={**os.environ, **self.settings.env},
                )
        except asyncio.CancelledError:
            await asyncio.to_thread(shutil.rmtree, scratch.path, True)
            raise
        except Exception as exc:
            logger.exception("could not start the trainer of %s", job_id)
            await asyncio.to_thread(shutil.rmtree, scratch.path, True)
            error = {"code": "worker_failed", "message": f"Could not start the trainer: {exc}", "param": None}
            await fail_job(store, job_id, error, expect=("running",))
            return
        scratch.pid.write_text(str(process.pid))
        try:
            await self._watch(job_id, process, scratch, tail)
            await self._observe(job_id, scratch, tail)
            scratch.pid.unlink(missing_ok=True)
            await self._settle(job_id, scratch, process.returncode)
        except asyncio.CancelledError:
            await asyncio.shield(self._shutdown(job_id, process, scratch, tail))
            raise
        finally:
            if process.returncode is not None:
                await asyncio.to_thread(shutil.rmtree, scratch.path, True)

    async def _restore(self, scratch: JobDir, newest: Any) -> _Tail:
        """Put the newest checkpoint where the trainer resumes from, already counted as uploaded."""
        relative = f"checkpoints/step-{newest.step}"
        await download_dir(self._blobs, newest.blob_key, scratch.path / relative)
        line = {
            "step_number": newest.step,
            "created_at": newest.created_at,
            "metrics": newest.metrics,
            "path": relative,
        }
        scratch.checkpoints.write_text(json.dumps(line) + "\n")
        return _Tail(checkpoints_offset=scratch.checkpoints.stat().st_size, uploaded={relative})

    async def _spec(self, job: JobObject, scratch: JobDir, *, resume: bool) -> dict[str, Any]:
        method = str((job.get("method") or {}).get("type") or "supervised")
        hyper = dict(((job.get("method") or {}).get(method) or {}).get("hyperparameters") or {})
        validation = job.get("validation_file")
        training = await self._fetch_file(str(job["training_file"]), scratch.path)
        validation_path = await self._fetch_file(str(validation), scratch.path) if validation else None
        return {
            "job_id": job["id"],
            "model": job["model"],
            "models_dir": str(self.settings.models_dir),
            "training_file": str(training),
            "validation_file": str(validation_path) if validation_path else None,
            "method": method,
            "n_epochs": hyper.get("n_epochs"),
            "batch_size": hyper.get("batch_size"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier"),
            "beta": hyper.get("beta", "auto"),
            "seed": job.get("seed") or 0,
            "suffix": job.get("user_provided_suffix"),
            "output_dir": str(scratch.path),
            "resume": resume,
        }

    async def _watch(
        self, job_id: str, process: asyncio.subprocess.Process, scratch: JobDir, tail: _Tail
    ) -> None:
        """Until the trainer exits: copy its files into the store, follow the job's control."""
        while True:
            record = await self._store.get_job(job_id)
            if record is None or record.status == "cancelled" or record.control == CANCEL:
                await self._stop(process, scratch, CANCEL, terminate=True)
                return
            if record.status == "paused" or record.control == PAUSE:
                scratch.set_control(PAUSE)
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), self.settings.poll_interval)
                return
            except TimeoutError:
                pass
            await self._observe(job_id, scratch, tail)

    async def _stop(
        self, process: asyncio.subprocess.Process, scratch: JobDir, word: str, *, terminate: bool
    ) -> None:
        scratch.set_control(word)
        grace = self.settings.cancel_grace if terminate else self.settings.stop_grace
        if terminate and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
        except TimeoutError:
            logger.warning("trainer of %s did not stop within %.1fs; killing it", scratch.path.name, grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def _shutdown(
        self, job_id: str, process: asyncio.subprocess.Process, scratch: JobDir, tail: _Tail
    ) -> None:
        await self._stop(process, scratch, PAUSE, terminate=False)
        try:
            await self._observe(job_id, scratch, tail)  # the checkpoint the pause left
            await self._leftover_checkpoints(job_id, scratch)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch.path, True)

    async def _observe(self, job_id: str, scratch: JobDir, tail: _Tail) -> None:
        """Copy new trainer events and checkpoints into the store; refresh `estimated_finish`."""
        events, tail.events_offset = read_jsonl(scratch.worker_events, offset=tail.events_offset)
        await self._store.add_events(job_id, events)
        lines, tail.checkpoints_offset = read_jsonl(scratch.checkpoints, offset=tail.checkpoints_offset)
        for line in lines:
            relative = str(line.get("path") or f"checkpoints/step-{line.get('step_number')}")
            await self._checkpoint(job_id, scratch, tail, relative, line)
        progress = read_json(scratch.progress)
        finish = (progress or {}).get("estimated_finish")
        if isinstance(finish, int | float):
            await self._store.update_job(job_id, {"estimated_finish": int(finish)}, expect=("running",))

    async def _checkpoint(
        self, job_id: str, scratch: JobDir, tail: _Tail, relative: str, line: Mapping[str, Any]
    ) -> None:
        directory = scratch.path / relative
        if relative in tail.uploaded or not directory.is_dir():
            return
        key = await upload_dir(self._blobs, directory)
        metrics = {k: v for k, v in dict(line.get("metrics") or {}).items() if v is not None}
        step = int(line.get("step_number") or relative.rsplit("-", 1)[-1])
        created = int(line.get("created_at") or time.time())
        await self._store.add_checkpoint(job_id, step=step, created_at=created, metrics=metrics, blob_key=key)
        tail.uploaded.add(relative)

    async def _settle(self, job_id: str, scratch: JobDir, returncode: int | None) -> None:
        """Apply the trainer's outcome to the job (a cancelled job stays cancelled)."""
        store = self._store
        outcome = read_json(scratch.outcome) or {}
        status = outcome.get("status")
        if status == "paused":
            await self._leftover_checkpoints(job_id, scratch)
            await store.update_job(
                job_id,
                {"status": "paused", "estimated_finish": None},
                expect=("running",),
                control=None,
                event=info_event("Job paused"),
            )
        elif status == "succeeded":
            await self._succeed(job_id, scratch, outcome)
        elif status == "failed":
            error = dict(outcome.get("error") or {})
            message = str(error.get("message") or "Training failed.")
            line = error.get("line")
            if line is not None and str(line) not in message:
                message = f"{message} (line {line})"
            failure = {
                "code": error.get("code") or "training_failed",
                "message": message,
                "param": error.get("param"),
            }
            await fail_job(store, job_id, failure, expect=("running",))
        elif status == "cancelled":
            await store.update_job(
                job_id,
                {"status": "cancelled", "finished_at": int(time.time()), "estimated_finish": None},
                expect=("running",),
                event=info_event("Job cancelled"),
            )
        else:
            lines = scratch.log_tail().strip().splitlines()
            detail = f": {lines[-1]}" if lines else ""
            message = f"The trainer exited with status {returncode} without an outcome{detail}"
            await fail_job(
                store, job_id, {"code": "training_failed", "message": message}, expect=("running",)
            )

    async def _leftover_checkpoints(self, job_id: str, scratch: JobDir) -> None:
        """Checkpoint directories the trainer left without a `checkpoints.jsonl` line."""
        directory = scratch.path / "checkpoints"
        if not directory.is_dir():
            return
        known = {f"checkpoints/step-{c.step}" for c in await self._store.checkpoints(job_id)}
        steps = sorted(
            int(p.name[5:])
            for p in directory.iterdir()
            if p.name.startswith("step-") and p.name[5:].isdigit()
        )
        tail = _Tail(uploaded=known)
        for step in steps:
            await self._checkpoint(job_id, scratch, tail, f"checkpoints/step-{step}", {"step_number": step})

    async def _succeed(self, job_id: str, scratch: JobDir, outcome: Mapping[str, Any]) -> None:
        store = self._store
        record = await store.get_job(job_id)
        if record is None or record.status != "running":
            return
        model_key = await upload_dir(self._blobs, scratch.model) if scratch.model.is_dir() else None
        result_key = await upload_file(self._blobs, scratch.metrics) if scratch.metrics.is_file() else None
        model = fine_tuned_model_name(record.body)
        fields = {
            "status": "succeeded",
            "fine_tuned_model": model,
            "trained_tokens": outcome.get("trained_tokens"),
            "result_files": [result_file_id(job_id)] if result_key else [],
            "finished_at": int(time.time()),
            "estimated_finish": None,
            "error": None,
        }
        done = await store.update_job(
            job_id,
            fields,
            expect=("running",),
            control=None,
            model_blob_key=model_key,
            result_blob_key=result_key,
            event=info_event(f"New fine-tuned model created: {model}"),
        )
        if done is None:  # cancelled at the last moment: the blobs are nobody's
            for key in (model_key, result_key):
                if key is not None:
                    await self._blobs.delete(key)
            return
        await store.add_events(job_id, [info_event("The job has successfully completed")])


def _resolve(job: JobObject, examples: int) -> dict[str, Any]:
    """The job's hyperparameters with `"auto"` resolved for `examples` training examples:
    3 epochs, a batch of ~0.2% of the examples (1–256, as OpenAI), multiplier 1.0; DPO's
    `beta` stays `"auto"` for the trainer."""
    method = str((job.get("method") or {}).get("type") or "supervised")
    given = dict(((job.get("method") or {}).get(method) or {}).get("hyperparameters") or {})
    given = {**dict(job.get("hyperparameters") or {}), **given}

    def pick(name: str, auto: Any) -> Any:
        value = given.get(name, "auto")
        return auto if value in (None, "auto") else value

    resolved: dict[str, Any] = {
        "n_epochs": int(pick("n_epochs", 3)),
        "batch_size": int(pick("batch_size", min(256, max(1, math.ceil(examples * 0.002))))),
        "learning_rate_multiplier": float(pick("learning_rate_multiplier", 1.0)),
    }
    if method == "dpo":
        beta = given.get("beta", "auto")
        resolved["beta"] = "auto" if beta in (None, "auto") else float(beta)
    return resolved
