"""The local provider's jobs as OpenAI JSON: an in-memory table over the job directories.

`job.json` holds the OpenAI-shaped job (native ids) exactly as `get_job` answers it; the
provider is its only writer, always on the event loop, so updates need no locks. Events and
checkpoints are rendered from the job directory on demand with stable native ids — an event's
id is its line number in `job_events.jsonl`, a checkpoint's its line number in the worker's
`checkpoints.jsonl` — so the registry's mirrors page them reliably.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.providers.interface import JobObject, Page
from tunegate.server.providers.local._jobdir import JobDir, iter_job_dirs, read_json, write_json

__all__ = ["JobTable", "job_not_found", "page_of", "short_id"]

NATIVE_JOB_PREFIX = "ftjob-local"
Clock = Callable[[], float]


def short_id(native_id: str) -> str:
    """The random part of a native job id, as used in `ft:` model names."""
    return native_id.removeprefix(NATIVE_JOB_PREFIX).lstrip("-")


def job_not_found(job_id: str) -> NotFound:
    return NotFound(f"No such fine-tuning job: {job_id}", code="job_not_found", param="fine_tuning_job_id")


def page_of(items: list[JobObject], *, limit: int, page_token: str | None) -> Page:
    """`items` (newest first) from just after the item whose id is `page_token`."""
    start = 0
    if page_token:
        ids = [item["id"] for item in items]
        if page_token not in ids:
            raise InvalidArgument(
                f"Invalid cursor {page_token!r}: not an id from this list.",
                code="invalid_cursor",
                param="after",
            )
        start = ids.index(page_token) + 1
    data = items[start : start + limit]
    has_more = start + limit < len(items)
    return Page(data=data, has_more=has_more, next_token=data[-1]["id"] if data and has_more else None)


class JobTable:
    """Every local job by native id, loaded from `<root>` at start and written through."""

    def __init__(self, root: Path, *, clock: Clock = time.time) -> None:
        self.root = root
        self._clock = clock
        self._jobs: dict[str, JobObject] = {}

    def now(self) -> int:
        return int(self._clock())

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for job_dir in iter_job_dirs(self.root):
            job = read_json(job_dir.job)
            if job is not None and job.get("id") == job_dir.path.name:
                self._jobs[job_dir.path.name] = job

    def __iter__(self) -> Iterator[JobObject]:
        return iter(self._jobs.values())

    def dir(self, job_id: str) -> JobDir:
        return JobDir(self.root / job_id)

    def get(self, job_id: str) -> JobObject:
        """The job (a copy); `NotFound` for an unknown id."""
        job = self._jobs.get(job_id)
        if job is None:
            raise job_not_found(job_id)
        return dict(job)

    def peek(self, job_id: str) -> JobObject | None:
        return self._jobs.get(job_id)

    def add(self, job: JobObject) -> None:
        job_dir = self.dir(job["id"])
        job_dir.path.mkdir(parents=True)
        write_json(job_dir.job, job)
        self._jobs[job["id"]] = job

    def update(self, job_id: str, **fields: Any) -> JobObject:
        """Set `fields` on the job and persist it; returns the new job."""
        job = {**self._jobs[job_id], **fields}
        if job != self._jobs[job_id]:
            write_json(self.dir(job_id).job, job)
            self._jobs[job_id] = job
        return dict(job)

    def event(self, job_id: str, message: str, *, level: str = "info", data: Any = None) -> None:
        """Append a lifecycle event (type `message`) to the job's listed log."""
        self.dir(job_id).append_event(
            {"created_at": self.now(), "level": level, "message": message, "type": "message", "data": data}
        )

    def newest_first(self) -> list[JobObject]:
        return sorted(self._jobs.values(), key=lambda job: (job["created_at"], job["id"]), reverse=True)

    def events(self, job_id: str) -> list[JobObject]:
        """The job's events newest first, with ids `ftevent-<job>-<line>`."""
        short = short_id(job_id)
        events: list[JobObject] = []
        for number, line in enumerate(self.dir(job_id).events(), 1):
            event: JobObject = {
                "object": "fine_tuning.job.event",
                "id": f"ftevent-{short}-{number}",
                "created_at": int(line.get("created_at") or 0),
                "level": line.get("level") or "info",
                "message": str(line.get("message") or ""),
                "type": line.get("type") or "message",
            }
            if line.get("data") is not None:
                event["data"] = line["data"]
            events.append(event)
        events.reverse()
        return events

    def checkpoints(self, job_id: str) -> list[JobObject]:
        """The job's checkpoints newest first, with ids `ftckpt-<job>-<line>`."""
        job = self._jobs[job_id]
        short = short_id(job_id)
        model = checkpoint_model_name(job)
        items: list[JobObject] = []
        for number, line in enumerate(self.dir(job_id).checkpoint_lines(), 1):
            step = int(line.get("step_number") or 0)
            metrics = {k: v for k, v in dict(line.get("metrics") or {}).items() if v is not None}
            items.append(
                {
                    "object": "fine_tuning.job.checkpoint",
                    "id": f"ftckpt-{short}-{number}",
                    "created_at": int(line.get("created_at") or 0),
                    "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{step}",
                    "fine_tuning_job_id": job_id,
                    "step_number": step,
                    "metrics": metrics,
                }
            )
        items.reverse()
        return items


def base_model_name(model: str) -> str:
    """The base model as it appears in `ft:` names (`local:<path>` → `local-<dir name>`)."""
    if model.startswith("local:"):
        name = Path(model[len("local:") :]).name or "model"
        return f"local-{name}"
    return model


def fine_tuned_model_name(job: JobObject) -> str:
    """`ft:<base>:local:<suffix>:<short id>`, OpenAI's shape (an empty suffix stays empty)."""
    suffix = job.get("user_provided_suffix") or ""
    return f"ft:{base_model_name(str(job['model']))}:local:{suffix}:{short_id(job['id'])}"


def checkpoint_model_name(job: JobObject) -> str:
    return fine_tuned_model_name(job)
