"""The registry's jobs, events and checkpoints as the contract's messages.

This module is the one place where a provider's OpenAI-shaped JSON becomes a message. A provider
answers with its native ids; callers only ever see gateway ids for what the gateway created:
`id` is the gateway job id, `training_file`/`validation_file` are the ids the caller passed
(gateway file ids stay gateway ids), `metadata` is the caller's (the provider copy also carries
the gateway's tag). Statuses are limited to OpenAI's set plus `paused`.

Two steps, so that each answer parses JSON into a message once:

- `with_provider_job(record, provider_job)` renders the provider's job with those ids into the
  record's `snapshot` (the OpenAI JSON the registry stores, unknown keys included) and its
  normalized `status`;
- `job_message(record)` (and `job_list`, for a page) reads the snapshot — or, while the provider
  has not confirmed the job, the intent's request — into `FineTuningJob`. The reading is lenient:
  provider objects carry keys the contract does not have (`usage_metrics`, …), and those are
  dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tunegate.openai_json import from_openai
from tunegate.server.providers.interface import JobObject
from tunegate.server.store import JobRecord
from tunegate.v1 import fine_tuning_pb2 as ft

__all__ = [
    "checkpoint_list",
    "event_list",
    "foreign_job",
    "job_list",
    "job_message",
    "normalize_status",
    "with_provider_job",
]

JOB_OBJECT = "fine_tuning.job"
STATUSES = frozenset({"validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"})
# Spellings some providers (or their previews) use for transitional states.
_STATUS_ALIASES = {
    "created": "validating_files",
    "pending": "queued",
    "pausing": "paused",
    "resuming": "running",
    "cancelling": "cancelled",
    "canceled": "cancelled",
}
_LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
_JOB_DEFAULTS: dict[str, Any] = {
    "error": None,
    "fine_tuned_model": None,
    "finished_at": None,
    "hyperparameters": {},
    "organization_id": "",
    "result_files": [],
    "trained_tokens": None,
    "validation_file": None,
    "integrations": None,
    "seed": 0,
    "estimated_finish": None,
}


def normalize_status(status: Any) -> str:
    """OpenAI's status for a provider's spelling; an unknown one reads as `running`."""
    text = str(status or "")
    text = _STATUS_ALIASES.get(text, text)
    return text if text in STATUSES else "running"


# -- jobs ------------------------------------------------------------------------------------


def with_provider_job(record: JobRecord, provider_job: Mapping[str, Any]) -> JobRecord:
    """`record` with the provider's latest job as its snapshot: gateway id, the caller's file
    ids and metadata, a normalized status, and every required key present."""
    status = normalize_status(provider_job.get("status"))
    snapshot: dict[str, Any] = {**_JOB_DEFAULTS, **provider_job}
    request = record.request
    snapshot.update(
        object=JOB_OBJECT,
        id=record.id,
        training_file=request["training_file"],
        validation_file=request.get("validation_file"),
        metadata=record.metadata if "metadata" in request else None,
        status=status,
    )
    snapshot.setdefault("created_at", record.created_at)
    snapshot.setdefault("model", request.get("model", ""))
    error = snapshot["error"]
    if error and not any(error.get(k) for k in ("code", "message")):
        snapshot["error"] = None  # OpenAI's examples send an all-null error for a healthy job
    return dataclasses.replace(record, snapshot=snapshot, status=status)


def job_message(record: JobRecord) -> ft.FineTuningJob:
    """The job as the caller sees it: its snapshot once the provider confirmed it, else its
    intent (see `_intent_json`)."""
    return from_openai(_record_json(record), ft.FineTuningJob, lenient=True)


def foreign_job(provider_job: Mapping[str, Any]) -> ft.FineTuningJob:
    """A provider job the registry does not know (created elsewhere), under its native ids."""
    return from_openai(_foreign_json(provider_job), ft.FineTuningJob, lenient=True)


def job_list(jobs: Sequence[JobRecord | JobObject], *, has_more: bool) -> ft.ListFineTuningJobsResponse:
    """A page of jobs, in the order given: registry jobs as `job_message` renders them, provider
    jobs the registry does not know (JSON) as `foreign_job` does. The page is read in one pass."""
    data = [_record_json(job) if isinstance(job, JobRecord) else _foreign_json(job) for job in jobs]
    return from_openai({"data": data, "has_more": has_more}, ft.ListFineTuningJobsResponse, lenient=True)


def _record_json(record: JobRecord) -> Mapping[str, Any]:
    # A snapshot is stored exactly when the provider confirms the job (state `created`).
    job = record.snapshot if record.snapshot is not None else _intent_json(record)
    return {**job, "provider": record.provider}


def _intent_json(record: JobRecord) -> dict[str, Any]:
    """A job the provider has not confirmed yet, from the request: `validating_files` (or
    `failed` with the registry's error once creation was given up)."""
    request = record.request
    method = request.get("method")
    hyperparameters = request.get("hyperparameters")
    if hyperparameters is None and method and method.get("type") == "supervised":
        hyperparameters = (method.get("supervised") or {}).get("hyperparameters")
    job: dict[str, Any] = {
        **_JOB_DEFAULTS,
        "object": JOB_OBJECT,
        "id": record.id,
        "created_at": record.created_at,
        "model": request.get("model", ""),
        "status": record.status,
        "training_file": request["training_file"],
        "validation_file": request.get("validation_file"),
        "hyperparameters": hyperparameters or {},
        "integrations": request.get("integrations"),
        "seed": request.get("seed") or 0,
        "metadata": record.metadata if "metadata" in request else None,
    }
    if method is not None:
        job["method"] = method
    if request.get("suffix") is not None:
        job["user_provided_suffix"] = request["suffix"]
    if record.error is not None and record.status == "failed":
        job["error"] = {
            "code": record.error.get("code") or "error",
            "message": record.error.get("message") or "",
            "param": record.error.get("param"),
        }
        job["finished_at"] = record.updated_at
    return job


def _foreign_json(provider_job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_JOB_DEFAULTS,
        **provider_job,
        "object": JOB_OBJECT,
        "status": normalize_status(provider_job.get("status")),
    }


# -- events and checkpoints ------------------------------------------------------------------


def event_list(
    items: Iterable[tuple[str, Mapping[str, Any]]], *, has_more: bool
) -> ft.ListFineTuningEventsResponse:
    """A page of events from `(id, provider body)` pairs: each under the id given."""
    data = [_event_json(body, gateway_id=item_id) for item_id, body in items]
    return from_openai({"data": data, "has_more": has_more}, ft.ListFineTuningEventsResponse, lenient=True)


def checkpoint_list(
    items: Iterable[tuple[str, Mapping[str, Any]]], *, job_id: str, has_more: bool
) -> ft.ListFineTuningCheckpointsResponse:
    """A page of checkpoints from `(id, provider body)` pairs: each under the id given and
    pointing at `job_id`; `first_id`/`last_id` are set when the page is not empty."""
    data = [_checkpoint_json(body, gateway_id=item_id, job_id=job_id) for item_id, body in items]
    page: dict[str, Any] = {"data": data, "has_more": has_more}
    if data:
        page.update(first_id=data[0]["id"], last_id=data[-1]["id"])
    return from_openai(page, ft.ListFineTuningCheckpointsResponse, lenient=True)


def _event_json(body: Mapping[str, Any], *, gateway_id: str) -> dict[str, Any]:
    event = {
        "object": "fine_tuning.job.event",
        "id": gateway_id,
        "created_at": int(body.get("created_at") or 0),
        "level": _LEVELS.get(str(body.get("level") or "info").lower(), "info"),
        "message": str(body.get("message") or ""),
    }
    if body.get("type") is not None:
        event["type"] = body["type"]
    if body.get("data") is not None:
        event["data"] = body["data"]
    return event


def _checkpoint_json(body: Mapping[str, Any], *, gateway_id: str, job_id: str) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": gateway_id,
        "created_at": int(body.get("created_at") or 0),
        "fine_tuned_model_checkpoint": str(body.get("fine_tuned_model_checkpoint") or ""),
        "fine_tuning_job_id": job_id,
        "step_number": int(body.get("step_number") or 0),
        "metrics": dict(body.get("metrics") or {}),
    }
