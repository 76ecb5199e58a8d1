"""Naming and paging of the local provider's jobs as OpenAI JSON (native ids, `ft:` names)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tunegate.server.errors import InvalidArgument, NotFound
from tunegate.server.providers.interface import JobObject, Page

__all__ = ["fine_tuned_model_name", "job_not_found", "page_of", "short_id"]

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
