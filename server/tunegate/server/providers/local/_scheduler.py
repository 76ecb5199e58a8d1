"""Running local jobs: validation, a bounded FIFO worker pool, worker processes, and recovery.

Theory of operation. A job moves (statuses are OpenAI's)::

    validating_files ──data ok──▶ queued ──slot free──▶ running ──outcome──▶ succeeded | failed
          │ bad data ─▶ failed        │                   │ pause ─▶ paused ──resume──▶ queued
          └── cancel (any non-terminal status) ─▶ cancelled ◀──────────┘

- Validation (`_data.validate_file`) runs in a thread, never on the event loop; a broken rule
  fails the job with `{code, message (naming the line), param}`.
- At most `concurrency` workers run; each is `python -m tunegate.server.providers.local.worker <dir>`,
  a child process in its own session, so training never touches the server's event loop.
  While it runs, its `events.jsonl` is copied into the listed log and `progress.json` gives
  `estimated_finish`; when it exits, its `outcome.json` decides the final status.
- Cancel: status `cancelled` at once, `control=cancel`, SIGTERM, SIGKILL after `cancel_grace`;
  the call returns once the process is gone. Pause: status `paused` at once, `control=pause`
  (the worker checkpoints and exits, freeing its slot); resume queues the job again with
  `resume: true` when a checkpoint exists.
- Server stop (`aclose`): every worker is asked to pause (so it leaves a checkpoint), and killed
  after `stop_grace`; `job.json` keeps saying `running`. At the next start (`recover`), a job
  found `validating_files` is validated again, `queued` is queued again, and `running` is
  settled: an outcome the worker wrote meanwhile is applied; otherwise the job is queued to
  resume from its newest checkpoint, or fails with `code: "interrupted"` when there is none.
  A worker left over by a crashed server (its pid still alive) is stopped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunegate.server.providers.interface import JobObject
from tunegate.server.providers.local._jobdir import JobDir, read_json, read_jsonl, write_json
from tunegate.server.providers.local._state import JobTable, fine_tuned_model_name, short_id

__all__ = ["RESULT_PREFIX", "Scheduler", "SchedulerSettings", "result_file_id"]

logger = logging.getLogger("tunegate.server")

WORKER_MODULE = "tunegate.server.providers.local.worker"
RESULT_PREFIX = "file-local-result-"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CANCEL, PAUSE, SHUTDOWN = "cancel", "pause", "shutdown"


def result_file_id(job_id: str) -> str:
    """The native id of a job's `step_metrics.csv`."""
    return RESULT_PREFIX + short_id(job_id)


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """`concurrency`: workers at once. `cancel_grace`: SIGTERM → SIGKILL delay on cancel.
    `stop_grace`: how long a server stop waits for workers to pause. `poll_interval`: how often
    a running worker's files are read. `python`: the interpreter that runs workers. `env`:
    extra environment for workers (e.g. thread counts)."""

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


@dataclass
class _Worker:
    job_id: str
    process: asyncio.subprocess.Process
    stop_reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


FilePath = Callable[[str], Path]


class Scheduler:
    """Owns the validation tasks, the queue and the worker processes of a `JobTable`."""

    def __init__(
        self, table: JobTable, *, models_dir: Path, file_path: FilePath, settings: SchedulerSettings
    ) -> None:
        self._table = table
        self._models_dir = models_dir
        self._file_path = file_path
        self.settings = settings
        self._pending: list[str] = []
        self._workers: dict[str, _Worker] = {}
        self._starting: set[str] = set()  # slots taken by workers whose process is starting
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- entry points ---------------------------------------------------------------------------

    def validate(self, job_id: str) -> None:
        """Validate a `validating_files` job in the background, then queue it."""
        self._spawn(self._validate(job_id), f"validate-{job_id}")

    def enqueue(self, job_id: str) -> None:
        if job_id not in self._pending and job_id not in self._workers:
            self._pending.append(job_id)
        self._dispatch()

    def is_running(self, job_id: str) -> bool:
        return job_id in self._workers

    async def cancel(self, job_id: str) -> None:
        """Mark the job cancelled and stop its worker (returns once the process is gone)."""
        table = self._table
        table.update(job_id, status="cancelled", finished_at=table.now(), estimated_finish=None)
        table.event(job_id, "Job cancelled")
        with contextlib.suppress(ValueError):
            self._pending.remove(job_id)
        worker = self._workers.get(job_id)
        if worker is not None:
            await self._stop(worker, CANCEL, grace=self.settings.cancel_grace, terminate=True)

    async def pause(self, job_id: str) -> None:
        """Mark the job paused; a running worker checkpoints and exits (awaited, bounded)."""
        self._table.update(job_id, status="paused", estimated_finish=None)
        self._table.event(job_id, "Job paused")
        with contextlib.suppress(ValueError):
            self._pending.remove(job_id)
        worker = self._workers.get(job_id)
        if worker is not None:
            worker.stop_reason = PAUSE
            self._table.dir(job_id).set_control(PAUSE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.done.wait(), self.settings.pause_wait)

    async def resume(self, job_id: str) -> None:
        """Queue a paused job again, resuming from its checkpoint when it has one."""
        worker = self._workers.get(job_id)
        if worker is not None:  # still pausing: let it finish its checkpoint first
            await worker.done.wait()
        job = self._table.peek(job_id)
        if job is None or job["status"] != "paused":
            return  # it finished (or failed) while pausing
        self._table.update(job_id, status="queued")
        self._table.event(job_id, "Job resumed")
        self.enqueue(job_id)

    async def recover(self) -> None:
        """Settle the jobs a previous server left behind (see the module docstring)."""
        jobs = sorted(self._table, key=lambda job: (job["created_at"], job["id"]))
        for job in [j for j in jobs if j["status"] == "running"]:
            await self._recover_running(job["id"])
        for job in jobs:
            if job["status"] == "validating_files":
                self.validate(job["id"])
            elif job["status"] == "queued":
                self.enqueue(job["id"])

    async def aclose(self) -> None:
        """Stop every worker (asked to pause, killed after `stop_grace`) and background task.
        Jobs keep their status, so the next start resumes them."""
        self._closing = True
        self._pending.clear()
        workers = list(self._workers.values())
        await asyncio.gather(
            *(self._stop(w, SHUTDOWN, grace=self.settings.stop_grace, terminate=False) for w in workers),
            return_exceptions=True,
        )
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- validation -------------------------------------------------------------------------

    async def _validate(self, job_id: str) -> None:
        from tunegate.server.providers.local._data import DataError, validate_file

        job = self._table.get(job_id)
        method = str((job.get("method") or {}).get("type") or "supervised")
        self._table.event(job_id, f"Validating training file: {job['training_file']}")
        reports: dict[str, Any] = {}
        try:
            for param in ("training_file", "validation_file"):
                file_id = job.get(param)
                if file_id:
                    path = self._file_path(str(file_id))
                    reports[param] = await asyncio.to_thread(validate_file, path, method, param=param)  # type: ignore[arg-type]
        except DataError as exc:
            message = exc.message
            if exc.line is not None and str(exc.line) not in message:
                message = f"{message} (line {exc.line})"
            self._fail(job_id, {"code": exc.code, "message": message, "param": exc.param})
            return
        except Exception as exc:
            logger.exception("validating local job %s failed", job_id)
            self._fail(job_id, {"code": "validation_error", "message": str(exc), "param": "training_file"})
            return
        current = self._table.peek(job_id)
        if current is None or current["status"] != "validating_files":
            return  # cancelled meanwhile
        examples = reports["training_file"].examples
        hyperparameters = _resolve(job, examples)
        method_body = dict(job.get("method") or {"type": method})
        method_body[method] = {**dict(method_body.get(method) or {}), "hyperparameters": hyperparameters}
        self._table.update(
            job_id,
            status="queued",
            hyperparameters={k: v for k, v in hyperparameters.items() if k != "beta"},
            method=method_body,
        )
        self._table.event(job_id, "Files validated, moving job to queued state")
        self.enqueue(job_id)

    def _fail(self, job_id: str, error: Mapping[str, Any]) -> None:
        table = self._table
        table.update(
            job_id,
            status="failed",
            error={"code": error.get("code"), "message": error.get("message"), "param": error.get("param")},
            finished_at=table.now(),
            estimated_finish=None,
        )
        table.event(job_id, f"Fine-tuning job failed: {error.get('message')}", level="error")

    # -- workers ----------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while (
            not self._closing
            and self._pending
            and len(self._workers) + len(self._starting) < self.settings.concurrency
        ):
            job_id = self._pending.pop(0)
            job = self._table.peek(job_id)
            if job is None or job["status"] != "queued":
                continue
            self._starting.add(job_id)  # taken now: the process starts after an await
            self._spawn(self._run(job_id), f"worker-{job_id}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spec(self, job: JobObject, job_dir: JobDir, *, resume: bool) -> dict[str, Any]:
        method = str((job.get("method") or {}).get("type") or "supervised")
        hyper = dict(((job.get("method") or {}).get(method) or {}).get("hyperparameters") or {})
        validation = job.get("validation_file")
        return {
            "job_id": job["id"],
            "model": job["model"],
            "models_dir": str(self._models_dir),
            "training_file": str(self._file_path(str(job["training_file"]))),
            "validation_file": str(self._file_path(str(validation))) if validation else None,
            "method": method,
            "n_epochs": hyper.get("n_epochs"),
            "batch_size": hyper.get("batch_size"),
            "learning_rate_multiplier": hyper.get("learning_rate_multiplier"),
            "beta": hyper.get("beta", "auto"),
            "seed": job.get("seed") or 0,
            "suffix": job.get("user_provided_suffix"),
            "output_dir": str(job_dir.path),
            "resume": resume,
        }

    async def _run(self, job_id: str) -> None:
        table = self._table
        job_dir = table.dir(job_id)
        job = table.get(job_id)
        resume = job_dir.has_checkpoint()
        try:
            for stale in (job_dir.outcome, job_dir.control):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            write_json(job_dir.spec, self._spec(job, job_dir, resume=resume))
            with job_dir.log.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    self.settings.python,
                    "-m",
                    WORKER_MODULE,
                    str(job_dir.path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C at the terminal reaches the server only
                    env={**os.environ, **self.settings.env},
                )
        except Exception as exc:
            logger.exception("could not start the worker of %s", job_id)
            self._starting.discard(job_id)
            self._fail(job_id, {"code": "worker_failed", "message": f"Could not start the trainer: {exc}"})
            self._dispatch()
            return
        except BaseException:
            self._starting.discard(job_id)
            raise
        worker = _Worker(job_id, process)
        self._workers[job_id] = worker
        self._starting.discard(job_id)
        job_dir.pid.write_text(str(process.pid))
        status = table.get(job_id)["status"]
        if status == "queued":
            table.update(job_id, status="running")
            table.event(job_id, "Fine-tuning job resumed" if resume else "Fine-tuning job started")
        else:  # cancelled or paused while the process was starting
            worker.stop_reason = CANCEL if status == "cancelled" else PAUSE
            job_dir.set_control(worker.stop_reason)
        try:
            while True:
                try:
                    await asyncio.wait_for(process.wait(), self.settings.poll_interval)
                    break
                except TimeoutError:
                    self._observe(job_id)
            self._observe(job_id)
            self._finish(worker, process.returncode)
        finally:
            with contextlib.suppress(FileNotFoundError):
                job_dir.pid.unlink()
            self._workers.pop(job_id, None)
            worker.done.set()
            self._dispatch()

    def _observe(self, job_id: str) -> None:
        """Copy new worker events into the listed log; refresh `estimated_finish`."""
        table = self._table
        job_dir = table.dir(job_id)
        tail = read_json(job_dir.tail) or {}
        offset = int(tail.get("events_offset") or 0)
        events, new_offset = read_jsonl(job_dir.worker_events, offset=offset)
        for event in events:
            job_dir.append_event(event)
        if new_offset != offset:
            write_json(job_dir.tail, {"events_offset": new_offset})
        progress = read_json(job_dir.progress)
        job = table.peek(job_id)
        if progress and job is not None and job["status"] == "running":
            finish = progress.get("estimated_finish")
            if isinstance(finish, (int, float)):
                table.update(job_id, estimated_finish=int(finish))

    def _finish(self, worker: _Worker, returncode: int | None) -> None:
        job_id, reason = worker.job_id, worker.stop_reason
        if reason in (SHUTDOWN, CANCEL):
            return  # shutdown: settled at the next start; cancel: already cancelled
        self._settle(job_id, returncode)

    def _settle(self, job_id: str, returncode: int | None) -> None:
        """Apply the worker's outcome to the job."""
        table = self._table
        job_dir = table.dir(job_id)
        outcome = read_json(job_dir.outcome) or {}
        status = outcome.get("status")
        if status == "succeeded":
            job = table.get(job_id)
            model = fine_tuned_model_name(job)
            result_files = [result_file_id(job_id)] if job_dir.metrics.is_file() else []
            table.update(
                job_id,
                status="succeeded",
                fine_tuned_model=model,
                trained_tokens=outcome.get("trained_tokens"),
                result_files=result_files,
                finished_at=table.now(),
                estimated_finish=None,
                error=None,
            )
            table.event(job_id, f"New fine-tuned model created: {model}")
            table.event(job_id, "The job has successfully completed")
        elif status == "failed":
            error = dict(outcome.get("error") or {})
            message = str(error.get("message") or "Training failed.")
            line = error.get("line")
            if line is not None and str(line) not in message:
                message = f"{message} (line {line})"
            self._fail(
                job_id,
                {
                    "code": error.get("code") or "training_failed",
                    "message": message,
                    "param": error.get("param"),
                },
            )
        elif status == "paused":
            if table.get(job_id)["status"] != "paused":
                table.update(job_id, status="paused", estimated_finish=None)
                table.event(job_id, "Job paused")
        elif status == "cancelled":
            if table.get(job_id)["status"] != "cancelled":
                table.update(job_id, status="cancelled", finished_at=table.now(), estimated_finish=None)
                table.event(job_id, "Job cancelled")
        else:
            tail = job_dir.log_tail().strip().splitlines()
            detail = f": {tail[-1]}" if tail else ""
            self._fail(
                job_id,
                {
                    "code": "training_failed",
                    "message": f"The trainer exited with status {returncode} without an outcome{detail}",
                    "param": None,
                },
            )

    async def _stop(self, worker: _Worker, reason: str, *, grace: float, terminate: bool) -> None:
        """Ask the worker to stop (control file, SIGTERM when `terminate`), kill it after `grace`."""
        worker.stop_reason = reason
        job_dir = self._table.dir(worker.job_id)
        job_dir.set_control(CANCEL if reason == CANCEL else PAUSE)
        process = worker.process
        if terminate and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
        except TimeoutError:
            logger.warning("worker of %s did not stop within %.1fs; killing it", worker.job_id, grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        await worker.done.wait()

    # -- recovery -----------------------------------------------------------------------------

    async def _recover_running(self, job_id: str) -> None:
        table = self._table
        job_dir = table.dir(job_id)
        await _stop_orphan(job_dir)
        self._observe(job_id)
        outcome = read_json(job_dir.outcome) or {}
        if outcome.get("status") in ("succeeded", "failed"):
            self._settle(job_id, None)
        elif job_dir.has_checkpoint():
            table.update(job_id, status="queued", estimated_finish=None)
            table.event(job_id, "The gateway restarted; the job will resume from its last checkpoint")
            self.enqueue(job_id)  # ahead of the jobs that were queued behind it
        else:
            self._fail(
                job_id,
                {
                    "code": "interrupted",
                    "message": "The gateway stopped while this job was running, and it left no "
                    "checkpoint to resume from. Create the job again.",
                    "param": None,
                },
            )


async def _stop_orphan(job_dir: JobDir) -> None:
    """Stop a worker that outlived a crashed server (pause, then kill), if one is alive."""
    pid = job_dir.recorded_pid()
    if pid is None or not _is_worker(pid, job_dir):
        return
    job_dir.set_control(PAUSE)
    for _ in range(100):
        if not _alive(pid):
            break
        await asyncio.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        job_dir.pid.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_worker(pid: int, job_dir: JobDir) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return WORKER_MODULE.encode() in cmdline and str(job_dir.path).encode() in cmdline


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
