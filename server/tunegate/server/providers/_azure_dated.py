"""Translation between OpenAI's shapes and Azure OpenAI's *dated* API (`?api-version=2024-10-21`).

Sans-IO: pure functions over dicts. The v1 surface (`/openai/v1`) is OpenAI-shaped and needs
none of this.

Requests (OpenAI → dated):
- supervised only: `method.supervised.hyperparameters` (or the legacy top-level
  `hyperparameters`) become top-level `hyperparameters`, integers and numbers only — `"auto"`
  means "provider default", which the dated API expresses by omitting the key;
- DPO / reinforcement methods, `integrations` and a `suffix` beyond 40 characters of
  `[A-Za-z0-9_-]` are refused by `check_request` before any provider cost;
- `metadata` is not accepted by the dated API and is not sent. Hence the gateway's tag cannot
  ride on the job: crash recovery falls back to `matches_request` (same training file, model and
  the other echoed fields, created at or after the intent) — a best effort that two identical
  jobs created in the same window can confuse.

Answers (dated → OpenAI): `organisation_id` → `organization_id`; status `created`/`pending` →
`queued`; event level `warning` → `warn`; checkpoint metrics filtered to OpenAI's keys; every
key OpenAI's `FineTuningJob` requires is present (OpenAI's nulls where Azure has nothing); file
states `pending`/`running` → `uploaded` so the registry keeps waiting for `processed`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from tunegate.server.errors import InvalidArgument
from tunegate.server.providers.interface import JobObject, ProviderFile

__all__ = [
    "check_request",
    "checkpoint_to_openai",
    "create_body",
    "event_to_openai",
    "file_to_provider_file",
    "job_to_openai",
    "matches_request",
]

log = logging.getLogger(__name__)

_SUFFIX = re.compile(r"[A-Za-z0-9_-]{1,40}")
_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")
_JOB_STATUS = {
    "created": "queued",
    "pending": "queued",
    "notrunning": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "paused": "paused",
    "pausing": "running",  # still training until it is paused; OpenAI has no "pausing"
    "resuming": "running",
}
_EVENT_LEVEL = {"info": "info", "warning": "warn", "warn": "warn", "error": "error"}
_CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
_FILE_STATUS = {
    "uploaded": "uploaded",
    "pending": "uploaded",
    "running": "uploaded",
    "processed": "processed",
    "error": "error",
    "deleting": "error",
    "deleted": "error",
}


def check_request(request: Mapping[str, Any], api_version: str) -> None:
    """Raises `InvalidArgument` (with `param`) for what the dated API cannot do."""
    method = request.get("method") or {}
    method_type = method.get("type") if isinstance(method, Mapping) else None
    if method_type not in (None, "supervised"):
        raise InvalidArgument(
            f"Azure OpenAI api-version {api_version} supports only supervised fine-tuning, not "
            f"'{method_type}'; use api-version v1 for it.",
            param="method",
        )
    suffix = request.get("suffix")
    if suffix is not None and not (isinstance(suffix, str) and _SUFFIX.fullmatch(suffix)):
        raise InvalidArgument(
            f"Azure OpenAI api-version {api_version} takes a suffix of 1 to 40 characters of "
            "A-Z, a-z, 0-9, '-' and '_'.",
            param="suffix",
        )
    if request.get("integrations"):
        raise InvalidArgument(
            f"Azure OpenAI api-version {api_version} does not support integrations.", param="integrations"
        )


def _requested_hyperparameters(request: Mapping[str, Any]) -> Mapping[str, Any]:
    method = request.get("method")
    if isinstance(method, Mapping) and isinstance(method.get("supervised"), Mapping):
        chosen = method["supervised"].get("hyperparameters")
        if isinstance(chosen, Mapping):
            return chosen
    legacy = request.get("hyperparameters")
    return legacy if isinstance(legacy, Mapping) else {}


def create_body(request: Mapping[str, Any]) -> dict[str, Any]:
    """The dated `FineTuningJobCreation` body for an OpenAI create request (checked first)."""
    body: dict[str, Any] = {"model": request["model"], "training_file": request["training_file"]}
    for key in ("validation_file", "suffix", "seed"):
        if request.get(key) is not None:
            body[key] = request[key]
    chosen = _requested_hyperparameters(request)
    numbers = {
        key: chosen[key]
        for key in _HYPERPARAMETERS
        if isinstance(chosen.get(key), int | float) and not isinstance(chosen.get(key), bool)
    }
    if numbers:
        body["hyperparameters"] = numbers
    return body


def matches_request(job: Mapping[str, Any], request: Mapping[str, Any]) -> bool:
    """Whether a dated-API `job` plausibly is the one `request` created (the tag fallback)."""
    if job.get("training_file") != request.get("training_file") or job.get("model") != request.get("model"):
        return False
    for key in ("validation_file", "suffix", "seed"):
        wanted, seen = request.get(key), job.get(key)
        if wanted is not None and seen is not None and seen != wanted:
            return False
    return True


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _job_hyperparameters(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, Mapping) else {}
    out: dict[str, Any] = {}
    for key in _HYPERPARAMETERS:
        value = raw.get(key)
        # Azure reports defaults it has not resolved yet as absent (or -1): OpenAI says "auto".
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        out[key] = (value if key == "learning_rate_multiplier" else int(value)) if ok else "auto"
    return out


def _job_error(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping) or not (raw.get("code") or raw.get("message")):
        return None  # Azure (like OpenAI's own examples) may send an all-null error object
    return {
        "code": str(raw.get("code") or "error"),
        "message": str(raw.get("message") or ""),
        "param": raw.get("param") if isinstance(raw.get("param"), str) else None,
    }


def job_status(raw: Any) -> str:
    status = _JOB_STATUS.get(str(raw).lower())
    if status is None:
        log.warning("unknown Azure OpenAI job status %r, passed through", raw)
        return str(raw)
    return status


def job_to_openai(job: Mapping[str, Any]) -> JobObject:
    """A dated-API job as OpenAI's `FineTuningJob` (every required key present)."""
    hyperparameters = _job_hyperparameters(job.get("hyperparameters"))
    out: JobObject = {
        "id": str(job["id"]),
        "object": "fine_tuning.job",
        "created_at": _int_or_none(job.get("created_at")) or 0,
        "error": _job_error(job.get("error")),
        "fine_tuned_model": job.get("fine_tuned_model"),
        "finished_at": _int_or_none(job.get("finished_at")),
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": dict(hyperparameters)}},
        "model": str(job.get("model") or ""),
        "organization_id": str(job.get("organization_id") or job.get("organisation_id") or ""),
        "result_files": [str(f) for f in job.get("result_files") or []],
        "status": job_status(job.get("status")),
        "trained_tokens": _int_or_none(job.get("trained_tokens")),
        "training_file": str(job.get("training_file") or ""),
        "validation_file": job.get("validation_file"),
        "integrations": None,
        # OpenAI requires an integer; the dated API echoes the seed it used (2024-05-01-preview on).
        # 0 is also what the proto codec would render for a missing value.
        "seed": _int_or_none(job.get("seed")) or 0,
        "estimated_finish": _int_or_none(job.get("estimated_finish")),
        "metadata": None,
    }
    if isinstance(job.get("suffix"), str):
        out["user_provided_suffix"] = job["suffix"]  # OpenAI's name for the echoed suffix
    return out


def event_to_openai(event: Mapping[str, Any]) -> JobObject:
    """A dated-API event as OpenAI's `FineTuningJobEvent` (`warning` → `warn`)."""
    out: JobObject = {
        "object": "fine_tuning.job.event",
        "id": str(event["id"]),
        "created_at": _int_or_none(event.get("created_at")) or 0,
        "level": _EVENT_LEVEL.get(str(event.get("level")).lower(), "info"),
        "message": str(event.get("message") or ""),
    }
    if event.get("type") in ("message", "metrics"):
        out["type"] = event["type"]
    if isinstance(event.get("data"), Mapping):
        out["data"] = dict(event["data"])
    return out


def checkpoint_to_openai(checkpoint: Mapping[str, Any]) -> JobObject:
    """A dated-API checkpoint as OpenAI's `FineTuningJobCheckpoint` (OpenAI's metric keys only)."""
    metrics = checkpoint.get("metrics") if isinstance(checkpoint.get("metrics"), Mapping) else {}
    assert isinstance(metrics, Mapping)
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": str(checkpoint["id"]),
        "created_at": _int_or_none(checkpoint.get("created_at")) or 0,
        "fine_tuned_model_checkpoint": str(checkpoint.get("fine_tuned_model_checkpoint") or ""),
        "fine_tuning_job_id": str(checkpoint.get("fine_tuning_job_id") or ""),
        "step_number": _int_or_none(checkpoint.get("step_number")) or 0,
        "metrics": {
            key: metrics[key]
            for key in _CHECKPOINT_METRICS
            if isinstance(metrics.get(key), int | float) and not isinstance(metrics.get(key), bool)
        },
    }


def file_to_provider_file(record: Mapping[str, Any]) -> ProviderFile:
    """A dated-API (or v1) file record as a `ProviderFile`: Azure's import is asynchronous, so
    `pending`/`running` read as `uploaded` and the registry waits for `processed`."""
    raw = str(record.get("status") or "processed")
    status = _FILE_STATUS.get(raw.lower(), "uploaded")
    details = record.get("status_details") or record.get("statusDetails")
    if raw.lower() in ("deleting", "deleted") and not details:
        details = "The file was deleted at Azure OpenAI."
    return ProviderFile(id=str(record["id"]), status=status, status_details=details)
