"""OpenAI fine-tuning jobs ⇄ Bedrock model-customization jobs: pure translations, no I/O.

The shapes on the Bedrock side are botocore's service model for `bedrock` (API 2023-04-20) as
aiobotocore returns them: `CreateModelCustomizationJob` keyword arguments, and the
`GetModelCustomizationJob` answer / `ListModelCustomizationJobs` summaries with `datetime`
timestamps. The OpenAI side is the `fine_tuning.job` / `fine_tuning.job.event` JSON, with native
ids (the registry swaps in gateway ids, files and metadata; see `tunegate.server.jobs._render`).

Names. A job created for gateway job `ftjob-<24 alphanumerics>` (the `tag`) is called
`tunegate-<tag>` (`jobName`, and also its `clientRequestToken`, so a repeated create of the same
intent is answered with the same job) and carries the job tag `tunegate_job_id=<tag>`, on the job
and on the custom model. `find_job_by_tag` can list with `nameContains=job_name(tag)`. The custom
model is `<sanitized suffix>-<24 alphanumerics>`, or the 24 alphanumerics alone without a suffix,
so the (sanitized) suffix can be read back from a job as `user_provided_suffix`.

Hyperparameters come from `FAMILIES` (`_convert.py`): `n_epochs` → `epochCount`, `batch_size` →
`batchSize`, `learning_rate_multiplier` × the family's default `learningRate` → `learningRate`
(or → `learningRateMultiplier` unchanged, for a family with that key). `"auto"`, `null` or absent
→ the key is not sent and Bedrock uses its default. Values are sent as strings: integers as
`str(int)`, floats as the `repr` of the value rounded to 15 significant digits (so 3 × 1e-5 is
sent as `3e-05`, not `3.0000000000000004e-05`). A family whose table is empty (Cohere) takes
`n_epochs` / `batch_size` unchecked (Bedrock validates them) and refuses
`learning_rate_multiplier` (there is no default rate to multiply).

Theory of operation — Bedrock's job `status` and `statusDetails` → OpenAI's `status`:

    InProgress ─┬─ trainingDetails InProgress / Completed ─────────────▶ running
                ├─ validationDetails or dataProcessingDetails InProgress ▶ validating_files
                ├─ statusDetails present, nothing else running ──────────▶ queued
                └─ no statusDetails ─────────────────────────────────────▶ running
    Completed ──────────────────────────────────────────────────────────▶ succeeded
    Failed ─────────────────────────────────────────────────────────────▶ failed (+ error)
    Stopping, Stopped ──────────────────────────────────────────────────▶ cancelled

`Stopping` reads as `cancelled`: OpenAI has no `cancelling` (the SDK's status enum refuses it),
and OpenAI answers a cancel with `cancelled` at once; `finished_at` stays null until Bedrock
reports `endTime`. Bedrock's data processing (after validation, before training) is reported as
`validating_files`, as providers.md §8.1 maps it.

Metrics files. Bedrock writes, under the job's output S3 URI (Bedrock user guide, "Analyze the
results of a model customization job"), `model-customization-job-<job id>/training_artifacts/
step_wise_training_metrics.csv` (`step_number,epoch_number,training_loss,perplexity`, steps from
0) and, with a validation set, `…/validation_artifacts/post_fine_tuning_validation/
validation_metrics.csv` (`validation_loss` in place of `training_loss`). `<job id>` is taken to be
the last segment of the job ARN. The guide prints the folder tree flattened, so whether
`validation_metrics.csv` sits in a further `validation/` folder is not certain: `metrics_keys`
gives both places, most likely first.
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from tunegate.server.errors import InvalidArgument
from tunegate.server.providers._openai import TAG_KEY
from tunegate.server.providers.bedrock._convert import Family, HyperParameter, UnknownModel, family_for

__all__ = [
    "RESULT_COLUMNS",
    "TAG_KEY",
    "MetricsKeys",
    "client_request_token",
    "create_params",
    "custom_model_name",
    "events_from_bedrock",
    "hyperparameters_for",
    "job_from_bedrock",
    "job_from_summary",
    "job_name",
    "metrics_keys",
    "metrics_uris",
    "openai_hyperparameters",
    "results_csv",
    "status_from_bedrock",
]

NAME_PREFIX: Final = "tunegate-"
"""`jobName` and `clientRequestToken` are this plus the gateway job id."""
_GATEWAY_JOB_PREFIX = "ftjob-"  # tunegate.server.jobs._create.JOB_PREFIX (a layer above)
_NAME_MAX = 63  # jobName and customModelName: 1–63 characters
_TAG = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")

RESULT_COLUMNS: Final = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
"""The header of OpenAI's result files (`fine-tune-results` CSV)."""

_KNOBS = ("batch_size", "learning_rate_multiplier", "n_epochs")
_UNCHECKED_NAMES = {"n_epochs": "epochCount", "batch_size": "batchSize"}
_LEARNING_RATE = "learningRate"
_LEARNING_RATE_MULTIPLIER = "learningRateMultiplier"


# --- hyperparameters -----------------------------------------------------------------------------


def _round(value: float) -> float:
    """`value` rounded to 15 significant digits: products like 3 × 1e-5 lose their float noise."""
    return float(f"{value:.15g}")


def _text(value: float, *, integer: bool) -> str:
    """A hyperparameter value as Bedrock's string map takes it."""
    return str(int(value)) if integer else repr(_round(value))


def _requested(request: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The caller's supervised hyperparameters and the path they were given under."""
    method = request.get("method")
    from_method: Mapping[str, Any] | None = None
    if isinstance(method, Mapping):
        supervised = method.get("supervised")
        if isinstance(supervised, Mapping) and isinstance(supervised.get("hyperparameters"), Mapping):
            from_method = supervised["hyperparameters"]
    legacy = request.get("hyperparameters")
    legacy = legacy if isinstance(legacy, Mapping) else None
    if from_method is not None and legacy is not None:
        set_in_method = {k: v for k, v in from_method.items() if v not in (None, "auto")}
        set_in_legacy = {k: v for k, v in legacy.items() if v not in (None, "auto")}
        if set_in_legacy and set_in_legacy != set_in_method:
            raise InvalidArgument(
                "Give hyperparameters either in method.supervised.hyperparameters or in the "
                "deprecated top-level hyperparameters, not both.",
                param="hyperparameters",
            )
    if from_method is not None:
        return from_method, "method.supervised.hyperparameters"
    return legacy or {}, "hyperparameters"


def _knob(family: Family, knob: str) -> HyperParameter | None:
    return next((hp for hp in family.hyperparameters.values() if hp.openai == knob), None)


def _number(value: Any, *, integer: bool, param: str, family: Family) -> float:
    """`value` as a number, refusing booleans, strings, non-finite values and (for integers)
    fractions."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or (integer and not float(number).is_integer()):
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(
            f'{param} must be {kind} or "auto" for Bedrock {family.name} models (got {value!r})',
            param=param,
        )
    return float(number)


def _g(value: float) -> str:
    return f"{_round(value):g}"


def hyperparameters_for(family: Family, request: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Bedrock's `hyperParameters` for an OpenAI create request, and notes for the job's events.

    Reads `request["method"]["supervised"]["hyperparameters"]`, else the deprecated top-level
    `request["hyperparameters"]` (both at once only when the values they set, other than `"auto"`
    and null, agree). Raises `InvalidArgument` whose `param` is the path the caller used (e.g.
    `method.supervised.hyperparameters.n_epochs`) for a value of the wrong type, outside the
    family's range (the message gives the range), a knob the family lacks (`batch_size` on Nova)
    or a key that is not a supervised hyperparameter.
    """
    requested, path = _requested(request)
    out: dict[str, str] = {}
    notes: list[str] = []
    for knob, value in requested.items():
        param = f"{path}.{knob}"
        if value is None or value == "auto":
            continue
        if knob not in _KNOBS:
            raise InvalidArgument(f"{param} is not a supervised fine-tuning hyperparameter", param=param)
        hp = _knob(family, knob)
        if hp is None:
            name = _UNCHECKED_NAMES.get(knob) if not family.hyperparameters else None
            if name is None:
                raise InvalidArgument(_lacking(family, knob, param), param=param)
            number = _number(value, integer=True, param=param, family=family)
            if number < 1:
                raise InvalidArgument(f"{param} must be at least 1 (got {value!r})", param=param)
            out[name] = _text(number, integer=True)
            notes.append(
                f"{knob} {out[name]} sent as {name} unchecked: the gateway has no range for "
                f"{family.name}; Bedrock validates it"
            )
            continue
        number = _number(value, integer=hp.integer, param=param, family=family)
        if knob == "learning_rate_multiplier" and hp.name == _LEARNING_RATE:
            if number <= 0:
                raise InvalidArgument(f"{param} must be greater than 0 (got {value!r})", param=param)
            rate = _round(number * hp.default)
            if not hp.minimum <= rate <= hp.maximum:
                raise InvalidArgument(
                    f"{param} must be between {_g(hp.minimum / hp.default)} and "
                    f"{_g(hp.maximum / hp.default)} for Bedrock {family.name} models: it multiplies "
                    f"the default learningRate {_g(hp.default)}, and learningRate must be between "
                    f"{_g(hp.minimum)} and {_g(hp.maximum)} (got {value!r} → {_g(rate)})",
                    param=param,
                )
            out[hp.name] = _text(rate, integer=False)
            notes.append(
                f"{knob} {_g(number)} × {family.name} default learningRate {_g(hp.default)} = "
                f"{out[hp.name]} sent as {hp.name}"
            )
            continue
        if not hp.minimum <= number <= hp.maximum:
            raise InvalidArgument(
                f"{param} must be between {_g(hp.minimum)} and {_g(hp.maximum)} for Bedrock "
                f"{family.name} models (got {value!r})",
                param=param,
            )
        out[hp.name] = _text(number, integer=hp.integer)
        notes.append(f"{knob} {_g(number)} sent as {hp.name} {out[hp.name]!r}")
    return out, notes


def _lacking(family: Family, knob: str, param: str) -> str:
    if knob == "learning_rate_multiplier":
        return (
            f"{param} cannot be set for Bedrock {family.name} models: the gateway knows no default "
            f'learning rate to multiply; omit it or send "auto"'
        )
    return f'Bedrock {family.name} models have no {knob} setting; omit {param} or send "auto"'


def _parsed(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def openai_hyperparameters(family: Family | None, bedrock: Mapping[str, str]) -> dict[str, Any]:
    """Bedrock's `hyperParameters` in OpenAI's names: `n_epochs` and `batch_size` as integers,
    `learning_rate_multiplier` as `learningRate` / the family's default (or
    `learningRateMultiplier` as is). A key Bedrock did not report reads as the family's default
    expressed the same way; a knob the family lacks, or any knob of an unknown family (None, or
    one without a table) that Bedrock did not report, reads as `"auto"`."""
    out: dict[str, Any] = {}
    for knob in _KNOBS:
        hp = _knob(family, knob) if family is not None else None
        if hp is None:
            name = _LEARNING_RATE_MULTIPLIER if knob == "learning_rate_multiplier" else _UNCHECKED_NAMES[knob]
            value = _parsed(bedrock.get(name))
            out[knob] = "auto" if value is None else _as_knob(knob, value)
            continue
        value = _parsed(bedrock.get(hp.name))
        if value is None:
            value = hp.default
        if knob == "learning_rate_multiplier" and hp.name == _LEARNING_RATE:
            value = value / hp.default
        out[knob] = _as_knob(knob, value)
    return out


def _as_knob(knob: str, value: float) -> int | float:
    return _round(value) if knob == "learning_rate_multiplier" else int(value)


# --- names -----------------------------------------------------------------------------------------


def _checked_tag(tag: str) -> str:
    # The tag is a gateway job id, never caller input: a malformed one is a bug.
    if len(tag) > _NAME_MAX - len(NAME_PREFIX) or not _TAG.fullmatch(tag):
        raise ValueError(f"not a gateway job id: {tag!r}")
    return tag


def _unique_part(tag: str) -> str:
    """The random part of a gateway job id (`ftjob-<this>`), dashes removed."""
    return _checked_tag(tag).removeprefix(_GATEWAY_JOB_PREFIX).replace("-", "")


def job_name(tag: str) -> str:
    """The `jobName` for gateway job `tag`: `tunegate-<tag>` (≤ 63 characters of Bedrock's
    `[a-zA-Z0-9](-*[a-zA-Z0-9+\\-.])*`). `ValueError` for a tag that is not a gateway job id."""
    return NAME_PREFIX + _checked_tag(tag)


def client_request_token(tag: str) -> str:
    """The `clientRequestToken` (Bedrock's idempotency token) for gateway job `tag`: the same
    intent always sends the same token, so a create repeated after a lost answer is not doubled."""
    return NAME_PREFIX + _checked_tag(tag)


def _sanitized(suffix: str, room: int) -> str:
    """`suffix` in Bedrock's `([0-9a-zA-Z][_-]?)+`: accents dropped, every run of other
    characters one `-` (`_` kept when the run is only underscores), no separator at either end."""
    ascii_text = unicodedata.normalize("NFKD", suffix).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^0-9A-Za-z]+", lambda m: "_" if set(m.group()) == {"_"} else "-", ascii_text)
    return text.strip("-_")[:room].rstrip("-_")


def custom_model_name(suffix: str | None, tag: str) -> str:
    """The `customModelName` for gateway job `tag`: `<sanitized suffix>-<unique part of tag>`, or
    the unique part alone when the suffix is empty or has nothing usable. The suffix is cut so the
    name stays within 63 characters; the unique part keeps it unique."""
    unique = _unique_part(tag)
    room = _NAME_MAX - len(unique) - 1
    clean = _sanitized(suffix, room) if suffix and room > 0 else ""
    return f"{clean}-{unique}" if clean else unique


def _suffix_of(model_name: str | None, name: str | None) -> str | None:
    """The sanitized suffix `custom_model_name` put into `model_name`, for a job the gateway named."""
    if not model_name or not name or not name.startswith(NAME_PREFIX):
        return None
    try:
        unique = _unique_part(name.removeprefix(NAME_PREFIX))
    except ValueError:
        return None
    end = f"-{unique}"
    return model_name.removesuffix(end) if model_name.endswith(end) and len(model_name) > len(end) else None


# --- create ----------------------------------------------------------------------------------------


def create_params(
    *,
    request: Mapping[str, Any],
    family: Family,
    base_model_id: str,
    tag: str,
    role_arn: str,
    training_uri: str,
    validation_uri: str | None,
    output_uri: str,
    kms_key_id: str | None = None,
    vpc_config: Mapping[str, Sequence[str]] | None = None,
    customization_type: str = "FINE_TUNING",
) -> tuple[dict[str, Any], list[str]]:
    """Keyword arguments for `create_model_customization_job`, and the hyperparameter notes.

    `request` is the OpenAI create body (its `suffix` and hyperparameters are read); the URIs are
    `s3://` URIs of the staged files and the output prefix; `vpc_config` is Bedrock's
    `{"subnetIds": […], "securityGroupIds": […]}`. Raises what `hyperparameters_for` raises.
    """
    hyperparameters, notes = hyperparameters_for(family, request)
    tags = [{"key": TAG_KEY, "value": tag}]
    params: dict[str, Any] = {
        "jobName": job_name(tag),
        "customModelName": custom_model_name(request.get("suffix"), tag),
        "roleArn": role_arn,
        "clientRequestToken": client_request_token(tag),
        "baseModelIdentifier": base_model_id,
        "customizationType": customization_type,
        "jobTags": tags,
        "customModelTags": [dict(t) for t in tags],
        "trainingDataConfig": {"s3Uri": training_uri},
        "outputDataConfig": {"s3Uri": output_uri},
    }
    if validation_uri:
        params["validationDataConfig"] = {"validators": [{"s3Uri": validation_uri}]}
    if hyperparameters:
        params["hyperParameters"] = hyperparameters
    if kms_key_id:
        params["customModelKmsKeyId"] = kms_key_id
    if vpc_config is not None:
        params["vpcConfig"] = {
            "subnetIds": list(vpc_config["subnetIds"]),
            "securityGroupIds": list(vpc_config["securityGroupIds"]),
        }
    return params, notes


# --- jobs ------------------------------------------------------------------------------------------

_STAGES = (
    ("validationDetails", "validation"),
    ("dataProcessingDetails", "data processing"),
    ("trainingDetails", "training"),
)
_TERMINAL = {"Completed": "succeeded", "Failed": "failed", "Stopping": "cancelled", "Stopped": "cancelled"}
_FAILED_STAGE_CODES = {
    "validationDetails": "validation_failed",
    "dataProcessingDetails": "data_processing_failed",
    "trainingDetails": "training_failed",
}


def _seconds(value: Any) -> int | None:
    """Unix seconds from a botocore timestamp (`datetime`; naive means UTC), an ISO 8601
    string or a number."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(moment.timestamp())
    if isinstance(value, str) and value:
        return _seconds(datetime.fromisoformat(value.replace("Z", "+00:00")))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def _stage(job: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    details = job.get("statusDetails") or {}
    stage = details.get(key)
    return stage if isinstance(stage, Mapping) else {}


def status_from_bedrock(job: Mapping[str, Any]) -> str:
    """OpenAI's `status` for a Bedrock job or job summary (see the module's theory of operation)."""
    status = job.get("status")
    if status in _TERMINAL:
        return _TERMINAL[status]
    if not job.get("statusDetails"):
        return "running"
    if _stage(job, "trainingDetails").get("status") in ("InProgress", "Completed"):
        return "running"
    if any(
        _stage(job, key).get("status") == "InProgress"
        for key in ("validationDetails", "dataProcessingDetails")
    ):
        return "validating_files"
    return "queued"


def _model_id(arn: str | None) -> str:
    """The model id at the end of a foundation-model ARN (the ARN itself when it has no `/`)."""
    return (arn or "").rsplit("/", 1)[-1]


def _family_of(model: str) -> Family | None:
    try:
        return family_for(model)
    except UnknownModel:
        return None


def _failure(job: Mapping[str, Any], *, summary: bool) -> dict[str, Any]:
    code = next(
        (code for key, code in _FAILED_STAGE_CODES.items() if _stage(job, key).get("status") == "Failed"),
        "job_failed",
    )
    message = job.get("failureMessage") or (
        "Bedrock reports the job as Failed; retrieve the job for Bedrock's failure message."
        if summary
        else "Bedrock reports the job as Failed without a failure message."
    )
    return {"code": code, "message": message, "param": None}


def _job(job: Mapping[str, Any], *, family: Family | None, summary: bool) -> dict[str, Any]:
    model = _model_id(job.get("baseModelArn"))
    if family is None:
        family = _family_of(model)
    status = status_from_bedrock(job)
    terminal = status in ("succeeded", "failed", "cancelled")
    output_arn = job.get("customModelArn" if summary else "outputModelArn")
    model_name = job.get("customModelName" if summary else "outputModelName")
    validators = (job.get("validationDataConfig") or {}).get("validators") or []
    out: dict[str, Any] = {
        "object": "fine_tuning.job",
        "id": job["jobName"],
        "model": model,
        "created_at": _seconds(job.get("creationTime")) or 0,
        "finished_at": _seconds(job.get("endTime")) if terminal else None,
        "status": status,
        "error": _failure(job, summary=summary) if status == "failed" else None,
        "fine_tuned_model": (output_arn or model_name) if status == "succeeded" else None,
        "organization_id": "",
        "training_file": (job.get("trainingDataConfig") or {}).get("s3Uri") or "",
        "validation_file": validators[0].get("s3Uri") if validators else None,
        "result_files": [],
        "trained_tokens": None,
        "estimated_finish": None,
        "integrations": None,
        "seed": 0,
        "metadata": None,
    }
    if summary:
        # A summary has no hyperParameters: reporting the family defaults could be wrong.
        out["hyperparameters"] = {}
    else:
        hyperparameters = openai_hyperparameters(family, job.get("hyperParameters") or {})
        out["hyperparameters"] = hyperparameters
        if job.get("customizationType", "FINE_TUNING") == "FINE_TUNING":
            out["method"] = {"type": "supervised", "supervised": {"hyperparameters": dict(hyperparameters)}}
    suffix = _suffix_of(model_name, job.get("jobName"))
    if suffix is not None:
        out["user_provided_suffix"] = suffix
    return out


def job_from_bedrock(job: Mapping[str, Any], *, family: Family | None = None) -> dict[str, Any]:
    """A `GetModelCustomizationJob` answer as OpenAI's `fine_tuning.job` with native values.

    `id` is the `jobName`; `model` the base model id from `baseModelArn`; `training_file` /
    `validation_file` the S3 URIs (the registry replaces them); `fine_tuned_model` the
    `outputModelArn` once succeeded; `finished_at` the `endTime` of a finished job; a failed job's
    `error` is `{code, message: failureMessage, param: null}` with `code` naming the stage that
    failed (`validation_failed`, `data_processing_failed`, `training_failed`, else `job_failed`).
    `family` defaults to the base model's (hyperparameters read back through it). `method` is
    given for `FINE_TUNING` jobs only; `user_provided_suffix` is the sanitized suffix of a job the
    gateway named; `result_files` is empty (the adapter fills it from the metrics files).
    """
    return _job(job, family=family, summary=False)


def job_from_summary(summary: Mapping[str, Any], *, family: Family | None = None) -> dict[str, Any]:
    """A `ListModelCustomizationJobs` summary as OpenAI's `fine_tuning.job`, like
    `job_from_bedrock` with what a summary lacks left empty: `hyperparameters` `{}`, no `method`,
    `training_file` `""`, and a failed job's message only pointing at the full job."""
    return _job(summary, family=family, summary=True)


# --- events ----------------------------------------------------------------------------------------


def events_from_bedrock(job: Mapping[str, Any], notes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """OpenAI `fine_tuning.job.event`s derived from a `GetModelCustomizationJob` answer, newest
    first (Bedrock has no events API).

    From, in the order they happen: the job's creation, the create's hyperparameter `notes`
    (see `hyperparameters_for`), each `statusDetails` stage that has started (at its
    `creationTime`) and its outcome (`Completed`, `Failed`, … at its `lastModifiedTime`), the
    training / validation loss Bedrock reports, and the job's final or stopping status (`Failed`
    with its `failureMessage` at level `error`). Each message names its source. Ids are
    `ftevent-<jobName>-<what>`, the same on every call for the same event; events of the same
    second keep that order.
    """
    name = job["jobName"]
    created = _seconds(job.get("creationTime")) or 0
    last = _seconds(job.get("lastModifiedTime")) or created
    end = _seconds(job.get("endTime")) or last
    events: list[dict[str, Any]] = []

    def add(what: str, at: int | None, message: str, *, level: str = "info", data: Any = None) -> None:
        event: dict[str, Any] = {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{name}-{what}",
            "created_at": at if at is not None else created,
            "level": level,
            "message": message,
            "type": "message" if data is None else "metrics",
        }
        if data is not None:
            event["data"] = data
        events.append(event)

    add(
        "created",
        created,
        f"Bedrock creationTime: job {name} created for base model {_model_id(job.get('baseModelArn'))}",
    )
    for n, note in enumerate(notes, 1):
        add(f"hyperparameters-{n}", created, f"Gateway hyperparameters: {note}")
    for key, label in _STAGES:
        stage = _stage(job, key)
        status = stage.get("status")
        if status in (None, "NotStarted"):
            continue
        slug = key.removesuffix("Details").lower()
        add(
            f"{slug}-started",
            _seconds(stage.get("creationTime")),
            f"Bedrock statusDetails.{key}: InProgress ({label} started)",
        )
        if status != "InProgress":
            add(
                f"{slug}-{status.lower()}",
                _seconds(stage.get("lastModifiedTime")),
                f"Bedrock statusDetails.{key}: {status} ({label} {status.lower()})",
                level="error" if status == "Failed" else "info",
            )
    loss = _parsed_metric((job.get("trainingMetrics") or {}).get("trainingLoss"))
    if loss is not None:
        add("train-loss", end, f"Bedrock trainingMetrics.trainingLoss: {loss!r}", data={"train_loss": loss})
    for n, metric in enumerate(job.get("validationMetrics") or [], 1):
        value = _parsed_metric(metric.get("validationLoss"))
        if value is not None:
            add(
                f"valid-loss-{n}",
                end,
                f"Bedrock validationMetrics[{n - 1}].validationLoss: {value!r}",
                data={"valid_loss": value},
            )
    status = job.get("status")
    if status == "Completed":
        model = job.get("outputModelArn") or job.get("outputModelName")
        add("completed", end, f"Bedrock status: Completed (custom model {model})")
    elif status == "Failed":
        message = job.get("failureMessage") or "no failure message"
        add("failed", end, f"Bedrock status: Failed: {message}", level="error")
    elif status == "Stopped":
        add("stopped", end, "Bedrock status: Stopped (the job was stopped)")
    elif status == "Stopping":
        add("stopping", last, "Bedrock status: Stopping (a stop was requested)")
    order = {id(e): n for n, e in enumerate(events)}
    return sorted(events, key=lambda e: (e["created_at"], order[id(e)]), reverse=True)


def _parsed_metric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# --- metrics and result files ------------------------------------------------------------------------


class MetricsKeys(NamedTuple):
    """Where Bedrock writes a job's metrics, relative to its output S3 URI."""

    training: str
    """`step_wise_training_metrics.csv`."""
    validation: tuple[str, ...]
    """`validation_metrics.csv`: the places it may be, the documented one first."""


def metrics_keys(job: Mapping[str, Any]) -> MetricsKeys:
    """The metrics files of a job (a Get answer or a summary), relative to the job's output S3 URI
    (see the module docstring for the layout and its source). The folder is named after the job
    id, the last segment of `jobArn`."""
    folder = f"model-customization-job-{job['jobArn'].rsplit('/', 1)[-1]}"
    validation = f"{folder}/validation_artifacts/post_fine_tuning_validation"
    return MetricsKeys(
        training=f"{folder}/training_artifacts/step_wise_training_metrics.csv",
        validation=(
            f"{validation}/validation_metrics.csv",
            f"{validation}/validation/validation_metrics.csv",
        ),
    )


def metrics_uris(job: Mapping[str, Any]) -> MetricsKeys:
    """`metrics_keys` as `s3://` URIs under the job's `outputDataConfig.s3Uri`."""
    base = job["outputDataConfig"]["s3Uri"].rstrip("/")
    keys = metrics_keys(job)
    return MetricsKeys(f"{base}/{keys.training}", tuple(f"{base}/{key}" for key in keys.validation))


def _metric_rows(data: bytes | None, column: str) -> dict[tuple[float, float], str]:
    """`(epoch_number, step_number) → value text` from a Bedrock metrics CSV; an absent file, one
    without the expected columns, and rows whose numbers do not parse give nothing."""
    if not data:
        return {}
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig", errors="replace")))
    fields = {f.strip() for f in reader.fieldnames or ()}
    if not {"step_number", column} <= fields:
        return {}
    rows: dict[tuple[float, float], str] = {}
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        step, epoch, value = (
            _parsed(clean.get("step_number")),
            _parsed(clean.get("epoch_number") or "0"),
            clean.get(column, ""),
        )
        if step is None or epoch is None or value == "" or _parsed_any(value) is None:
            continue
        rows[(epoch, step)] = value
    return rows


def _parsed_any(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def results_csv(
    job: Mapping[str, Any], training_csv: bytes | None = None, validation_csv: bytes | None = None
) -> bytes:
    """OpenAI's result file (`RESULT_COLUMNS`) for a Bedrock job.

    Built from Bedrock's `step_wise_training_metrics.csv` (`training_csv`) and
    `validation_metrics.csv` (`validation_csv`): one row per step, `step` = Bedrock's 0-based
    `step_number` + 1 (OpenAI counts from 1) — or, when a file's step numbers restart per epoch,
    the row's rank in (epoch, step) order + 1; rows of both files with the same (epoch, step)
    share a row; loss values are copied as Bedrock wrote them; Bedrock reports no token accuracy,
    so those columns are empty. When `validation_csv` has nothing, `validationMetrics[0]` fills the
    last row's `valid_loss`. When neither file has rows, one row (step 1) from
    `trainingMetrics.trainingLoss` and `validationMetrics[0].validationLoss`; the header alone
    when Bedrock reports no metrics at all.
    """
    train = _metric_rows(training_csv, "training_loss")
    valid = _metric_rows(validation_csv, "validation_loss")
    final_train = _parsed_metric((job.get("trainingMetrics") or {}).get("trainingLoss"))
    validators = job.get("validationMetrics") or []
    final_valid = _parsed_metric(validators[0].get("validationLoss")) if validators else None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    keys = sorted(set(train) | set(valid))
    if keys:
        global_steps = len({step for _, step in keys}) == len(keys)
        rows: list[list[Any]] = []
        for rank, key in enumerate(keys, 1):
            step = int(key[1]) + 1 if global_steps else rank
            rows.append([step, train.get(key, ""), "", valid.get(key, ""), ""])
        rows.sort(key=lambda row: int(row[0]))
        if not valid and final_valid is not None:
            rows[-1][3] = repr(final_valid)
        writer.writerows(rows)
    elif final_train is not None or final_valid is not None:
        writer.writerow([1, _or_empty(final_train), "", _or_empty(final_valid), ""])
    return out.getvalue().encode()


def _or_empty(value: float | None) -> str:
    return "" if value is None else repr(value)
