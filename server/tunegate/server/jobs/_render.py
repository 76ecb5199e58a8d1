"""The registry's OpenAI objects: provider JSON re-rendered with gateway ids.

A provider answers with its native ids; callers must only ever see gateway ids for what the
gateway created: `id` is the gateway job id, `training_file`/`validation_file` are the ids the
caller passed (gateway file ids stay gateway ids), `metadata` is the caller's (the provider copy
also carries the gateway's tag). Statuses are limited to OpenAI's set plus `paused`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunegate.server.store import JobRecord

__all__ = [
    "STATUSES",
    "TERMINAL_STATUSES",
    "checkpoint_object",
    "event_object",
    "foreign_job_object",
    "intent_object",
    "job_object",
    "normalize_status",
]

JOB_OBJECT = "fine_tuning.job"
STATUSES = frozenset({"validating_files", "queued", "running", "succeeded", "failed", "cancelled", "paused"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
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


def job_object(provider_job: Mapping[str, Any], record: JobRecord) -> dict[str, Any]:
    """A provider's job JSON as the caller sees it: gateway id, the caller's file ids and
    metadata, a normalized status, and every required key present."""
    job: dict[str, Any] = {**_JOB_DEFAULTS, **provider_job}
    request = record.request
    job.update(
        object=JOB_OBJECT,
        id=record.id,
        training_file=request["training_file"],
        validation_file=request.get("validation_file"),
        metadata=record.metadata if "metadata" in request else None,
        status=normalize_status(provider_job.get("status")),
    )
    job.setdefault("created_at", record.created_at)
    job.setdefault("model", request.get("model", ""))
    if job.get("error") and not any(job["error"].get(k) for k in ("code", "message")):
        job["error"] = None  # OpenAI's examples send an all-null error for a healthy job
    return job


def intent_object(record: JobRecord) -> dict[str, Any]:
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


def event_object(body: Mapping[str, Any], *, gateway_id: str) -> dict[str, Any]:
    """A mirrored event under its gateway id."""
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


def checkpoint_object(body: Mapping[str, Any], *, gateway_id: str, job_id: str) -> dict[str, Any]:
    """A mirrored checkpoint under its gateway id, pointing at the gateway job id."""
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": gateway_id,
        "created_at": int(body.get("created_at") or 0),
        "fine_tuned_model_checkpoint": str(body.get("fine_tuned_model_checkpoint") or ""),
        "fine_tuning_job_id": job_id,
        "step_number": int(body.get("step_number") or 0),
        "metrics": dict(body.get("metrics") or {}),
    }


def foreign_job_object(provider_job: Mapping[str, Any]) -> dict[str, Any]:
    """A provider job the registry does not know (created elsewhere): native ids, as listed."""
    return {
        **_JOB_DEFAULTS,
        **provider_job,
        "object": JOB_OBJECT,
        "status": normalize_status(provider_job.get("status")),
    }
