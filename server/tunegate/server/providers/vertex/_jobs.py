"""OpenAI fine-tuning ⇄ Vertex AI `tuningJobs`: pure translations, no I/O.

Sources: ../shared/reference/providers.md §6 and providers-2026-12.md, checked against the
`aiplatform` v1 discovery document (revision 20261106: `GoogleCloudAiplatformV1TuningJob`,
`…SupervisedTuningSpec`, `…PreferenceOptimizationSpec` and their hyperparameters).

- **Create.** `create_body` builds the `TuningJob`: `baseModel`; `supervisedTuningSpec` or, for
  `method: dpo`, `preferenceOptimizationSpec` (both in v1 now) with the `gs://` training/validation
  URIs, the hyperparameters (`hyperparameters_for`) and `exportLastCheckpointOnly`;
  `tunedModelDisplayName` from `suffix`; the gateway job id in `labels` (`tag_label`).
- **Hyperparameters.** `n_epochs` → `epochCount` (int64, sent as a JSON string as Google's JSON
  does), `learning_rate_multiplier` → `learningRateMultiplier`, DPO `beta` → `beta`;
  `provider_options.adapter_size` (1, 2, 4, 8, 16, 32 or the enum name) → `adapterSize`,
  `provider_options.export_last_checkpoint_only` → `exportLastCheckpointOnly`. `"auto"` or absent
  → omitted (Vertex's default). `batch_size` has no Vertex equivalent in v1: a 400 naming it.
- **Labels.** Label values allow lower-case letters, digits, `_` and `-` only, so the gateway id
  (`ftjob-` + mixed-case letters and digits) is written with each upper-case letter as `_` + its
  lower-case form (`ftjob-AbC1` → `ftjob-_ab_c1`): lossless, and at most 54 characters.
- **Jobs.** `job_from_vertex`: `id` = the last segment of `name`; RFC 3339 times → integer seconds;
  states: `QUEUED`/`PENDING` → `queued`, `RUNNING`/`UPDATING` → `running`, `SUCCEEDED` and
  `PARTIALLY_SUCCEEDED` → `succeeded`, `FAILED`/`EXPIRED` → `failed` (with `error`),
  `CANCELLING`/`CANCELLED` → `cancelled` (OpenAI has no cancelling state; the cancel was asked
  for), `PAUSED` → `paused`. `fine_tuned_model` is the tuned model's **endpoint**
  (`tunedModel.endpoint`, `projects/…/endpoints/…`), the name chat calls take as `model`; the
  model resource itself is in the events. `trained_tokens` from `tuningDataStats`.
- **Events and checkpoints** are derived from the job (Vertex has no such lists): events from
  its times, state, data statistics and error, each saying where it came from; checkpoints from
  `tunedModel.checkpoints[]`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tunegate.server.errors import InvalidArgument

__all__ = [
    "TAG_LABEL",
    "checkpoints_from_vertex",
    "create_body",
    "events_from_vertex",
    "hyperparameters_for",
    "job_from_vertex",
    "list_params",
    "page_from_vertex",
    "tag_from_labels",
    "tag_label",
]

TAG_LABEL = "tunegate_job_id"
_ADAPTER_SIZES = {
    1: "ADAPTER_SIZE_ONE",
    2: "ADAPTER_SIZE_TWO",
    4: "ADAPTER_SIZE_FOUR",
    8: "ADAPTER_SIZE_EIGHT",
    16: "ADAPTER_SIZE_SIXTEEN",
    32: "ADAPTER_SIZE_THIRTY_TWO",
}
_ADAPTER_BACK = {name: size for size, name in _ADAPTER_SIZES.items()}
_MAX_DISPLAY_NAME = 128
_STATES = {
    "JOB_STATE_QUEUED": "queued",
    "JOB_STATE_PENDING": "queued",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_UPDATING": "running",
    "JOB_STATE_SUCCEEDED": "succeeded",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_CANCELLING": "cancelled",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_PAUSED": "paused",
}
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_TAG_VALUE = re.compile(r"[a-z0-9_-]{1,63}")


# -- labels ------------------------------------------------------------------------------------


def tag_label(tag: str) -> str:
    """The gateway job id as a label value (see the module docstring)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in tag)


def tag_from_labels(labels: Mapping[str, Any]) -> str | None:
    """The gateway job id a job's labels carry, or None."""
    value = labels.get(TAG_LABEL)
    if not isinstance(value, str) or not _TAG_VALUE.fullmatch(value):
        return None
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), value)


# -- create ------------------------------------------------------------------------------------


def _requested(request: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    method = request.get("method") or {}
    kind = method.get("type") or "supervised"
    block = method.get(kind) or {}
    if block.get("hyperparameters"):
        return block["hyperparameters"], f"method.{kind}.hyperparameters"
    return request.get("hyperparameters") or {}, "hyperparameters"


def _number(value: Any, param: str, *, integer: bool, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"'{param}' must be 'auto' or {kind}; got {value!r}.", param=param)
    if not low <= value <= high:
        raise InvalidArgument(
            f"'{param}' must be between {low:g} and {high:g} on Vertex AI; got {value}.", param=param
        )
    return float(value)


def hyperparameters_for(request: Mapping[str, Any], *, method: str) -> tuple[dict[str, Any], list[str]]:
    """Vertex's `hyperParameters` for an OpenAI create request (`method`: `supervised` or
    `preference`), and notes for the job's events. Raises `InvalidArgument` naming the OpenAI
    path of a value Vertex would refuse."""
    values, path = _requested(request)
    out: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in values.items():
        param = f"{path}.{name}"
        if value is None or value == "auto":
            continue
        if name == "n_epochs":
            out["epochCount"] = str(int(_number(value, param, integer=True, low=1, high=100)))
        elif name == "learning_rate_multiplier":
            out["learningRateMultiplier"] = _number(value, param, integer=False, low=1e-9, high=100)
        elif name == "beta" and method == "preference":
            out["beta"] = _number(value, param, integer=False, low=1e-9, high=2)
        elif name == "batch_size":
            raise InvalidArgument(
                f"'{param}': Vertex AI chooses the batch size itself; leave it 'auto'.", param=param
            )
        else:
            raise InvalidArgument(f"'{param}' has no Vertex AI equivalent.", param=param)
        notes.append(f"{name} {value} sent as {next(reversed(out))}")
    options = request.get("provider_options") or {}
    size = options.get("adapter_size")
    if size is not None:
        adapter: str | None = None
        if isinstance(size, int) and not isinstance(size, bool):
            adapter = _ADAPTER_SIZES.get(size)
        elif isinstance(size, str) and size in _ADAPTER_BACK:
            adapter = size
        if adapter is None:
            raise InvalidArgument(
                "provider_options.adapter_size must be 1, 2, 4, 8, 16 or 32 (or ADAPTER_SIZE_…).",
                param="provider_options.adapter_size",
            )
        out["adapterSize"] = adapter
    return out, notes


def create_body(
    *,
    request: Mapping[str, Any],
    base_model: str,
    tag: str,
    training_uri: str,
    validation_uri: str | None,
    method: str,
    display_name_suffix: str | None,
    provider_options: Mapping[str, Any],
) -> tuple[dict[str, Any], str]:
    """The `TuningJob` to create and the API version to send it to (`v1`, which has both specs)."""
    hyperparameters, _notes = hyperparameters_for(request, method=method)
    spec: dict[str, Any] = {"trainingDatasetUri": training_uri}
    if validation_uri:
        spec["validationDatasetUri"] = validation_uri
    if hyperparameters:
        spec["hyperParameters"] = hyperparameters
    export = provider_options.get("export_last_checkpoint_only")
    if export is not None:
        if not isinstance(export, bool):
            raise InvalidArgument(
                "provider_options.export_last_checkpoint_only must be true or false.",
                param="provider_options.export_last_checkpoint_only",
            )
        spec["exportLastCheckpointOnly"] = export
    display = (display_name_suffix or f"tunegate-{tag}")[:_MAX_DISPLAY_NAME]
    body: dict[str, Any] = {
        "baseModel": base_model,
        "tunedModelDisplayName": display,
        "labels": {TAG_LABEL: tag_label(tag)},
    }
    if method == "preference":
        body["preferenceOptimizationSpec"] = spec
        return body, "v1"
    body["supervisedTuningSpec"] = spec
    return body, "v1"


# -- reading jobs --------------------------------------------------------------------------------


def _seconds(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    # Google writes up to nanoseconds; Python parses at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _spec(job: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if job.get("preferenceOptimizationSpec"):
        return "dpo", job["preferenceOptimizationSpec"]
    return "supervised", job.get("supervisedTuningSpec") or {}


def _openai_hyperparameters(spec: Mapping[str, Any], kind: str) -> dict[str, Any]:
    values = spec.get("hyperParameters") or {}
    out: dict[str, Any] = {
        "n_epochs": _int(values.get("epochCount")) or "auto",
        "learning_rate_multiplier": values.get("learningRateMultiplier", "auto"),
        "batch_size": "auto",
    }
    if kind == "dpo":
        out["beta"] = values.get("beta", "auto")
    return out


def job_from_vertex(job: Mapping[str, Any]) -> dict[str, Any]:
    """A `TuningJob` as OpenAI's `fine_tuning.job` (native id, see the module docstring)."""
    name = str(job.get("name") or "")
    status = _STATES.get(str(job.get("state") or ""), "running")
    kind, spec = _spec(job)
    hyperparameters = _openai_hyperparameters(spec, kind)
    tuned = job.get("tunedModel") or {}
    error = job.get("error") or {}
    stats = (job.get("tuningDataStats") or {}).get("supervisedTuningDataStats") or {}
    out: dict[str, Any] = {
        "object": "fine_tuning.job",
        "id": name.rsplit("/", 1)[-1],
        "created_at": _seconds(job.get("createTime")) or 0,
        "finished_at": _seconds(job.get("endTime")) if status in _TERMINAL else None,
        "model": str(job.get("baseModel") or ""),
        "status": status,
        "training_file": spec.get("trainingDatasetUri") or "",
        "validation_file": spec.get("validationDatasetUri"),
        "hyperparameters": {k: v for k, v in hyperparameters.items() if k != "beta"},
        "method": {"type": kind, kind: {"hyperparameters": hyperparameters}},
        "fine_tuned_model": tuned.get("endpoint") if status == "succeeded" else None,
        "trained_tokens": _int(stats.get("totalBillableTokenCount")),
        "result_files": [],
        "error": None,
        "organization_id": "",
        "seed": 0,
    }
    if status == "failed":
        out["error"] = {
            "code": "job_failed" if job.get("state") != "JOB_STATE_EXPIRED" else "job_expired",
            "message": str(error.get("message") or "The tuning job failed on Vertex AI."),
            "param": None,
        }
    display = job.get("tunedModelDisplayName")
    if isinstance(display, str) and display and not display.startswith("tunegate-ftjob-"):
        out["user_provided_suffix"] = display
    return out


def _event(job_id: str, n: int, at: int | None, message: str, level: str = "info") -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": f"ftevent-{job_id}-{n}",
        "created_at": at or 0,
        "level": level,
        "message": message,
        "type": "message",
    }


def events_from_vertex(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Events derived from the job, newest first, each saying which field it comes from."""
    job_id = str(job.get("name") or "").rsplit("/", 1)[-1]
    events: list[dict[str, Any]] = []
    created = _seconds(job.get("createTime"))
    events.append(
        _event(
            job_id,
            0,
            created,
            f"Vertex AI tuning job created (createTime), base model {job.get('baseModel')}.",
        )
    )
    if job.get("startTime"):
        events.append(
            _event(job_id, 1, _seconds(job.get("startTime")), "Vertex AI started tuning (startTime).")
        )
    stats = (job.get("tuningDataStats") or {}).get("supervisedTuningDataStats") or {}
    if stats:
        events.append(
            _event(
                job_id,
                2,
                _seconds(job.get("startTime")) or created,
                "Training data (tuningDataStats): "
                f"{stats.get('tuningDatasetExampleCount', '?')} examples, "
                f"{stats.get('totalBillableTokenCount', '?')} billable tokens, "
                f"{stats.get('tuningStepCount', '?')} steps.",
            )
        )
    state = str(job.get("state") or "")
    at = _seconds(job.get("endTime")) or _seconds(job.get("updateTime")) or created
    status = _STATES.get(state, "running")
    if status == "failed":
        message = (job.get("error") or {}).get("message") or "no message"
        events.append(_event(job_id, 3, at, f"Vertex AI state {state}: {message} (error).", "error"))
    elif state:
        text = f"Vertex AI state {state} (state)."
        tuned = job.get("tunedModel") or {}
        if status == "succeeded" and tuned:
            text += f" Tuned model {tuned.get('model')}, endpoint {tuned.get('endpoint')} (tunedModel)."
        events.append(_event(job_id, 3, at, text))
    events.sort(key=lambda e: (e["created_at"], e["id"]), reverse=True)
    return events


def checkpoints_from_vertex(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`tunedModel.checkpoints[]` as OpenAI checkpoints, newest (highest step) first.
    `fine_tuned_model_checkpoint` is the checkpoint's endpoint when it has one, else the tuned
    model's resource name with `@<checkpointId>` in place of its version (`models/77@1` →
    `models/77@2`)."""
    job_id = str(job.get("name") or "").rsplit("/", 1)[-1]
    tuned = job.get("tunedModel") or {}
    at = _seconds(job.get("updateTime")) or _seconds(job.get("createTime")) or 0
    out: list[dict[str, Any]] = []
    for point in tuned.get("checkpoints") or []:
        checkpoint_id = str(point.get("checkpointId") or "")
        out.append(
            {
                "object": "fine_tuning.job.checkpoint",
                "id": f"ftckpt-{job_id}-{checkpoint_id}",
                "created_at": at,
                "fine_tuned_model_checkpoint": point.get("endpoint")
                or f"{str(tuned.get('model') or '').partition('@')[0]}@{checkpoint_id}",
                "fine_tuning_job_id": job_id,
                "step_number": _int(point.get("step")) or 0,
                "metrics": {},
            }
        )
    out.sort(key=lambda c: c["step_number"], reverse=True)
    return out


# -- listing -----------------------------------------------------------------------------------


def list_params(limit: int, page_token: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"pageSize": limit}
    if page_token:
        params["pageToken"] = page_token
    return params


def page_from_vertex(answer: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    jobs = [job for job in answer.get("tuningJobs") or [] if isinstance(job, dict)]
    return jobs, answer.get("nextPageToken") or None
