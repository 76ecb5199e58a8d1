"""OpenAI fine-tuning ⇄ Fireworks `supervisedFineTuningJobs` / `dpoJobs`: pure translations, no I/O.

Sources: ../shared/reference/providers.md §7, §8 and providers-2026-12.md, checked against the
typed models of the `fireworks-ai` SDK 1.2.30 (`SupervisedFineTuningJob`, `DpoJob`,
`shared.TrainingConfig`, `shared.ReinforcementLearningLossConfig`, `shared.DpoConfig`, the
`…CreateParams` and the `SyncCursor…` list pages); wire names are the SDK's aliases.

- **Create.** `job_body` answers the collection (`supervisedFineTuningJobs` or `dpoJobs`, under
  `/v1/accounts/{account}/`) and the body. SFT puts everything at the top level
  (`dataset`, `baseModel`, `outputModel`, `displayName`, `evaluationDataset`, `epochs`, …); DPO
  puts the training knobs in `trainingConfig` and the loss in `lossConfig`. `create_query` gives
  the caller-chosen job id (`supervisedFineTuningJobId` / `dpoJobId`, `job_id_for(tag)`): the same
  intent always asks for the same id, so a create repeated after a lost answer is refused by
  Fireworks as a duplicate instead of training twice, and the job can be fetched by that id.
- **Tag.** Neither job model has labels or annotations, so the gateway job id is carried in
  `displayName` as `tunegate-<tag>` (free text, case kept; `tag_of` reads it back) and, case
  folded but lossless, in the job id (`job_id_for`).
- **Hyperparameters** (`hyperparameters_for`). `n_epochs` → `epochs`; `batch_size` (OpenAI counts
  examples) → `batchSizeSamples` ("the number of samples per gradient batch"): Fireworks'
  `batchSize` is "the maximum packed number of tokens per batch" (`TrainingConfig`), offered as
  `provider_options.batch_size_tokens`; `learning_rate_multiplier` × the base model's default
  learning rate → `learningRate` (Fireworks takes an absolute rate only; without a known default
  the multiplier is refused, pointing at `provider_options.learning_rate`); DPO `beta` →
  `lossConfig.dpo.beta` with `lossConfig.method: "DPO"`. `lossConfig.klBeta` is *not* DPO's beta:
  the SDK calls it the "KL coefficient (beta) override for GRPO-like methods", and a DPO job
  without `method` defaults to GRPO, so `method: "DPO"` is always sent.
- **Values.** Ranges the SDK or docs state: DPO beta in (0, 0.5) (`DpoConfig`). The others are
  the gateway's guesses, kept wide so Fireworks stays the judge: `epochs` 1–100, learning rate in
  (0, 1), `loraRank` a power of two 1–256, `maxContextLength` 1–1 048 576,
  `gradientAccumulationSteps` 1–1024, `learningRateWarmupSteps` ≥ 0, batch sizes ≥ 1.
- **Output model** (`output_model_id`). Fireworks takes a model *id* under the account; ids are
  taken to be DNS labels (lower-case letters, digits, `-`, 1–63 characters, a letter or digit at
  both ends, the pattern Fireworks' own SDK checks checkpoint ids with). With a `suffix`:
  `<sanitized suffix>-<lower-cased unique part of the tag>`, the suffix cut to fit; without one,
  `outputModel` is left out and Fireworks names the model after the job id.
- **Jobs** (`job_from_fireworks`). `id` = the last segment of `name`; states as providers.md §8.1:
  `UNSPECIFIED`/`CREATING`/`PENDING`/`RE_QUEUEING`/`IDLE` → `queued`, `VALIDATING`/
  `CREATING_INPUT_DATASET` → `validating_files`, `RUNNING`/`WRITING_RESULTS` → `running`,
  `COMPLETED`/`EARLY_STOPPED` → `succeeded`, `FAILED`/`EXPIRED` → `failed` (with
  `status.message`), `CANCELLING`/`CANCELLED`/`DELETING`/`DELETING_CLEANING_UP` → `cancelled`
  (OpenAI has no cancelling state), `PAUSED` → `paused`; an unknown state reads as `running`.
  `fine_tuned_model` = `accounts/<account>/models/<outputModel or job id>`; `trained_tokens` =
  `jobProgress.inputTokens` (a training job reads its tokens as input).
- **Events** (`events_from_fireworks`) are derived from the job (Fireworks has no events list):
  creation, the hyperparameter notes, progress (`jobProgress`) and state, each naming its source.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

from tunegate.server.errors import InvalidArgument

__all__ = [
    "DISPLAY_PREFIX",
    "base_model_name",
    "create_query",
    "events_from_fireworks",
    "hyperparameters_for",
    "job_body",
    "job_from_fireworks",
    "job_id_for",
    "list_params",
    "output_model_id",
    "page_from_fireworks",
    "tag_of",
]

Method = Literal["supervised", "dpo"]

DISPLAY_PREFIX: Final = "tunegate-"
"""A gateway-made job's `displayName` is this plus the gateway job id."""
_GATEWAY_JOB_PREFIX = "ftjob-"  # tunegate.server.jobs._create.JOB_PREFIX (a layer above)
_COLLECTIONS: Final[Mapping[str, str]] = {"supervised": "supervisedFineTuningJobs", "dpo": "dpoJobs"}
_ID_PARAMS: Final[Mapping[str, str]] = {"supervised": "supervisedFineTuningJobId", "dpo": "dpoJobId"}
_LIST_KEYS = _COLLECTIONS  # the list answer's key is the collection's name (SDK `SyncCursor…`)
_MODEL_NAME = re.compile(r"accounts/([a-z0-9][a-z0-9-]*)/models/([A-Za-z0-9][A-Za-z0-9._-]*)")
_BARE_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RESOURCE_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ID_MAX = 63
_TAG = re.compile(r"ftjob-[A-Za-z0-9]+")
_STATES: Final[Mapping[str, str]] = {
    "JOB_STATE_UNSPECIFIED": "queued",
    "JOB_STATE_CREATING": "queued",
    "JOB_STATE_PENDING": "queued",
    "JOB_STATE_RE_QUEUEING": "queued",
    "JOB_STATE_IDLE": "queued",
    "JOB_STATE_VALIDATING": "validating_files",
    "JOB_STATE_CREATING_INPUT_DATASET": "validating_files",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_WRITING_RESULTS": "running",
    "JOB_STATE_COMPLETED": "succeeded",
    "JOB_STATE_EARLY_STOPPED": "succeeded",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_CANCELLING": "cancelled",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_DELETING": "cancelled",
    "JOB_STATE_DELETING_CLEANING_UP": "cancelled",
    "JOB_STATE_PAUSED": "paused",
}
_TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_KNOBS = {
    "supervised": frozenset({"n_epochs", "batch_size", "learning_rate_multiplier"}),
    "dpo": frozenset({"n_epochs", "batch_size", "learning_rate_multiplier", "beta"}),
}


# --- model names and ids ---------------------------------------------------------------------------


def base_model_name(model: str) -> str:
    """Fireworks' `baseModel` for OpenAI's `model`: a bare name (`llama-v3p1-8b-instruct`) is
    `accounts/fireworks/models/<name>`; a full name `accounts/<account>/models/<model>` is kept.
    Anything else raises `InvalidArgument(param="model")`."""
    if _MODEL_NAME.fullmatch(model):
        return model
    if _BARE_MODEL.fullmatch(model):
        return f"accounts/fireworks/models/{model}"
    raise InvalidArgument(
        f"'{model}' is not a Fireworks model: give a model id (e.g. 'llama-v3p1-8b-instruct') or a "
        "full name 'accounts/<account>/models/<model>'.",
        param="model",
    )


def _checked_tag(tag: str) -> str:
    # The tag is a gateway job id, never caller input: a malformed one is a bug.
    if not _TAG.fullmatch(tag):
        raise ValueError(f"not a gateway job id: {tag!r}")
    return tag


def _unique_part(tag: str) -> str:
    return _checked_tag(tag).removeprefix(_GATEWAY_JOB_PREFIX)


def job_id_for(tag: str) -> str:
    """The Fireworks job id asked for gateway job `tag`: `tg-<unique part lower-cased>-<case mask>`,
    the mask (bit i set when character i was upper-case) in base 36, so distinct tags give
    distinct ids within Fireworks' lower-case resource-id alphabet. `ValueError` for a tag that is
    not a gateway job id."""
    unique = _unique_part(tag)
    mask = sum(1 << i for i, c in enumerate(unique) if c.isupper())
    digits = ""
    while True:
        mask, rest = divmod(mask, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[rest] + digits
        if not mask:
            break
    job_id = f"tg-{unique.lower()}-{digits}"
    if not _RESOURCE_ID.fullmatch(job_id):
        raise ValueError(f"gateway job id too long for a Fireworks job id: {tag!r}")
    return job_id


def create_query(tag: str, method: Method) -> dict[str, str]:
    """The create call's query: the caller-chosen job id (`job_id_for`) under the method's name."""
    return {_ID_PARAMS[method]: job_id_for(tag)}


def tag_of(job: Mapping[str, Any]) -> str | None:
    """The gateway job id a Fireworks job carries in its `displayName`, or None."""
    display = job.get("displayName")
    if not isinstance(display, str) or not display.startswith(DISPLAY_PREFIX):
        return None
    tag = display.removeprefix(DISPLAY_PREFIX)
    return tag if _TAG.fullmatch(tag) else None


def _sanitized(suffix: str, room: int) -> str:
    """`suffix` in Fireworks' id alphabet: accents dropped, lower-cased, every run of other
    characters one `-`, no `-` at either end, at most `room` characters."""
    text = unicodedata.normalize("NFKD", suffix).encode("ascii", "ignore").decode("ascii").lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:room].rstrip("-")


def output_model_id(suffix: str | None, tag: str) -> str | None:
    """`outputModel` for gateway job `tag` (see the module docstring), or None without a usable
    suffix (Fireworks then names the model after the job id)."""
    unique = _unique_part(tag).lower()
    room = _ID_MAX - len(unique) - 1
    clean = _sanitized(suffix, room) if suffix else ""
    return f"{clean}-{unique}" if clean else None


# --- hyperparameters -------------------------------------------------------------------------------


def _requested(request: Mapping[str, Any], method: Method) -> tuple[Mapping[str, Any], str]:
    """The caller's hyperparameters and the path they were given under (the method's block
    first, else the deprecated top-level `hyperparameters`)."""
    block = (request.get("method") or {}).get(method) or {}
    values = block.get("hyperparameters") if isinstance(block, Mapping) else None
    if isinstance(values, Mapping):
        return values, f"method.{method}.hyperparameters"
    legacy = request.get("hyperparameters")
    return (legacy if isinstance(legacy, Mapping) else {}), "hyperparameters"


def _number(value: Any, param: str, *, integer: bool) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or (integer and not float(number).is_integer()):
        kind = "an integer" if integer else "a number"
        raise InvalidArgument(f"'{param}' must be 'auto' or {kind} on Fireworks; got {value!r}.", param=param)
    return float(number)


def _in_range(
    value: Any,
    param: str,
    *,
    integer: bool,
    low: float,
    high: float,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    number = _number(value, param, integer=integer)
    below = number <= low if open_low else number < low
    above = number >= high if open_high else number > high
    if below or above:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        raise InvalidArgument(
            f"'{param}' must be in {left}{low:g}, {high:g}{right} on Fireworks; got {value!r}.", param=param
        )
    return number


def _round(value: float) -> float:
    """`value` at 15 significant digits: 3 × 1e-4 is 0.0003, not 0.00030000000000000003."""
    return float(f"{value:.15g}")


def _power_of_two(value: Any, param: str) -> int:
    number = int(_in_range(value, param, integer=True, low=1, high=256))
    if number & (number - 1):
        raise InvalidArgument(
            f"'{param}' must be a power of two (1, 2, 4, … 256); got {value!r}.", param=param
        )
    return number


def _boolean(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"'{param}' must be true or false; got {value!r}.", param=param)
    return value


# provider_options.<name> → (wire name, methods, checker)
_OPTIONS: Final[Mapping[str, tuple[str, frozenset[str], Any]]] = {
    "learning_rate": (
        "learningRate",
        frozenset({"supervised", "dpo"}),
        lambda v, p: _in_range(v, p, integer=False, low=0, high=1, open_low=True, open_high=True),
    ),
    "lora_rank": ("loraRank", frozenset({"supervised", "dpo"}), _power_of_two),
    "max_context_length": (
        "maxContextLength",
        frozenset({"supervised", "dpo"}),
        lambda v, p: int(_in_range(v, p, integer=True, low=1, high=1_048_576)),
    ),
    "gradient_accumulation_steps": (
        "gradientAccumulationSteps",
        frozenset({"supervised", "dpo"}),
        lambda v, p: int(_in_range(v, p, integer=True, low=1, high=1024)),
    ),
    "learning_rate_warmup_steps": (
        "learningRateWarmupSteps",
        frozenset({"supervised", "dpo"}),
        lambda v, p: int(_in_range(v, p, integer=True, low=0, high=1_000_000)),
    ),
    "batch_size_tokens": (
        "batchSize",
        frozenset({"supervised", "dpo"}),
        lambda v, p: int(_in_range(v, p, integer=True, low=1, high=10_000_000)),
    ),
    "early_stop": ("earlyStop", frozenset({"supervised"}), _boolean),
    "eval_auto_carveout": ("evalAutoCarveout", frozenset({"supervised"}), _boolean),
}
_BODY_OPTIONS = frozenset({"evaluation_dataset"})
"""Options `job_body` reads itself (not training knobs)."""


def hyperparameters_for(
    request: Mapping[str, Any], *, method: Method, base_default_lr: float | None
) -> tuple[dict[str, Any], list[str]]:
    """Fireworks' training fields for an OpenAI create request, and notes for the job's events.

    The fields use the wire names where they sit in the body: for SFT at the top level, for DPO
    in `trainingConfig`; a DPO `beta` comes back as `{"lossConfig": {"method": "DPO", "dpo":
    {"beta": …}}}` among them (`job_body` moves it out). `base_default_lr` is the base model's
    default learning rate (None when unknown). `"auto"` or null → the field is left out. Raises
    `InvalidArgument` whose `param` is the OpenAI path (`method.dpo.hyperparameters.beta`) or
    `provider_options.<name>`.
    """
    values, path = _requested(request, method)
    out: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in values.items():
        param = f"{path}.{name}"
        if value is None or value == "auto":
            continue
        if name not in _KNOBS[method]:
            raise InvalidArgument(f"'{param}' is not a {method} hyperparameter on Fireworks.", param=param)
        if name == "n_epochs":
            out["epochs"] = int(_in_range(value, param, integer=True, low=1, high=100))
            notes.append(f"n_epochs {out['epochs']} sent as epochs")
        elif name == "batch_size":
            out["batchSizeSamples"] = int(_in_range(value, param, integer=True, low=1, high=1_000_000))
            notes.append(f"batch_size {out['batchSizeSamples']} (examples) sent as batchSizeSamples")
        elif name == "learning_rate_multiplier":
            multiplier = _in_range(value, param, integer=False, low=0, high=1e6, open_low=True)
            if base_default_lr is None:
                raise InvalidArgument(
                    f"'{param}': Fireworks takes an absolute learning rate and the gateway does not "
                    "know this base model's default to multiply; send provider_options.learning_rate "
                    "(e.g. 0.0001) instead.",
                    param=param,
                )
            rate = _round(multiplier * base_default_lr)
            if not 0 < rate < 1:
                raise InvalidArgument(
                    f"'{param}' × the default learning rate {base_default_lr:g} = {rate:g}, outside "
                    "(0, 1) on Fireworks.",
                    param=param,
                )
            out["learningRate"] = rate
            notes.append(
                f"learning_rate_multiplier {multiplier:g} × base model default learning rate "
                f"{base_default_lr:g} = {rate:g} sent as learningRate"
            )
        else:  # beta, DPO only
            beta = _in_range(value, param, integer=False, low=0, high=0.5, open_low=True, open_high=True)
            out["lossConfig"] = {"method": "DPO", "dpo": {"beta": beta}}
            notes.append(f"beta {beta:g} sent as lossConfig.dpo.beta (method DPO)")
    options = request.get("provider_options") or {}
    for name, value in options.items():
        if value is None or name in _BODY_OPTIONS:
            continue
        param = f"provider_options.{name}"
        known = _OPTIONS.get(name)
        if known is None or method not in known[1]:
            where = "" if known is None else f" for {method} jobs"
            raise InvalidArgument(f"'{param}' is not a Fireworks training option{where}.", param=param)
        wire, _methods, check = known
        if wire == "learningRate" and "learningRate" in out:
            raise InvalidArgument(
                f"Give either '{param}' or learning_rate_multiplier, not both.", param=param
            )
        out[wire] = check(value, param)
        notes.append(f"{param} {out[wire]!r} sent as {wire}")
    if method == "dpo":
        out.setdefault("lossConfig", {"method": "DPO"})
    return out, notes


# --- create ----------------------------------------------------------------------------------------


def _dataset_name(dataset: str, account_id: str, param: str) -> str:
    if dataset.startswith("accounts/"):
        return dataset
    if not _RESOURCE_ID.fullmatch(dataset):
        raise InvalidArgument(f"'{param}': '{dataset}' is not a Fireworks dataset id.", param=param)
    return f"accounts/{account_id}/datasets/{dataset}"


def job_body(
    *,
    request: Mapping[str, Any],
    method: Method,
    tag: str,
    dataset: str,
    evaluation_dataset: str | None,
    account_id: str,
    suffix: str | None,
    base_default_lr: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """The collection to POST to (`supervisedFineTuningJobs` or `dpoJobs`, under
    `/v1/accounts/{account_id}/`) and the job body for an OpenAI create request.

    `dataset` / `evaluation_dataset` are Fireworks dataset ids or full names (the gateway's copies
    of `training_file` / `validation_file`); `provider_options.evaluation_dataset` names a
    dataset already on Fireworks instead (not both). DPO jobs have no evaluation dataset field,
    so one is refused (`param` `validation_file`). The base model comes from `request["model"]`
    (`base_model_name`).
    """
    base_model = base_model_name(str(request.get("model") or ""))
    fields, _notes = hyperparameters_for(request, method=method, base_default_lr=base_default_lr)
    loss = fields.pop("lossConfig", None)
    options = request.get("provider_options") or {}
    evaluation = evaluation_dataset
    chosen = options.get("evaluation_dataset")
    if chosen is not None:
        param = "provider_options.evaluation_dataset"
        if not isinstance(chosen, str) or evaluation is not None:
            raise InvalidArgument(
                f"'{param}' must be a Fireworks dataset id, and not given with validation_file.", param=param
            )
        evaluation = chosen
    body: dict[str, Any] = {
        "dataset": _dataset_name(dataset, account_id, "training_file"),
        "displayName": DISPLAY_PREFIX + _checked_tag(tag),
    }
    training: dict[str, Any] = {"baseModel": base_model}
    output = output_model_id(suffix, tag)
    if output is not None:
        training["outputModel"] = output
    training.update(fields)
    if method == "dpo":
        if evaluation is not None:
            param = "validation_file" if chosen is None else "provider_options.evaluation_dataset"
            raise InvalidArgument(f"'{param}': Fireworks DPO jobs take no evaluation dataset.", param=param)
        body["trainingConfig"] = training
        body["lossConfig"] = loss or {"method": "DPO"}
        return _COLLECTIONS[method], body
    if evaluation is not None:
        body["evaluationDataset"] = _dataset_name(evaluation, account_id, "validation_file")
    body.update(training)
    return _COLLECTIONS[method], body


# --- reading jobs ----------------------------------------------------------------------------------


def _seconds(value: Any) -> int | None:
    """Unix seconds from an RFC 3339 string (Fireworks' JSON) or a `datetime` (the SDK's models)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(moment.timestamp())
    if not isinstance(value, str) or not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))  # nanoseconds → micro
    try:
        return _seconds(datetime.fromisoformat(text))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _training(job: Mapping[str, Any], method: Method) -> Mapping[str, Any]:
    """Where the training fields sit: the job itself (SFT) or its `trainingConfig` (DPO)."""
    if method == "dpo":
        config = job.get("trainingConfig")
        return config if isinstance(config, Mapping) else {}
    return job


def _account(name: str) -> str:
    parts = name.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "accounts" else ""


def _fine_tuned_model(job: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    name = str(job.get("name") or "")
    output = str(training.get("outputModel") or "") or name.rsplit("/", 1)[-1]
    if output.startswith("accounts/"):
        return output
    return f"accounts/{_account(name)}/models/{output}"


def _openai_hyperparameters(
    training: Mapping[str, Any], loss: Mapping[str, Any], method: Method, base_default_lr: float | None
) -> dict[str, Any]:
    rate = _float(training.get("learningRate"))
    multiplier: Any = "auto"
    if rate is not None and base_default_lr:
        multiplier = _round(rate / base_default_lr)
    out: dict[str, Any] = {
        "n_epochs": _int(training.get("epochs")) or "auto",
        "batch_size": _int(training.get("batchSizeSamples")) or "auto",
        "learning_rate_multiplier": multiplier,
    }
    if method == "dpo":
        beta = _float((loss.get("dpo") or {}).get("beta"))
        out["beta"] = beta if beta is not None else "auto"
    return out


def _suffix_of(training: Mapping[str, Any], tag: str | None) -> str | None:
    output = str(training.get("outputModel") or "").rsplit("/", 1)[-1]
    if tag is None or not output:
        return None
    ending = "-" + _unique_part(tag).lower()
    return output.removesuffix(ending) if output.endswith(ending) and output != ending else None


def job_from_fireworks(
    job: Mapping[str, Any], *, method: Method, base_default_lr: float | None = None
) -> dict[str, Any]:
    """A Fireworks SFT or DPO job (JSON as Fireworks sends it) as OpenAI's `fine_tuning.job`, with
    native values (see the module docstring). `training_file` / `validation_file` are the dataset
    names (the registry swaps in the caller's file ids). `learning_rate_multiplier` reads back as
    `learningRate` / `base_default_lr` when that default is known, else `"auto"`."""
    name = str(job.get("name") or "")
    state = str(job.get("state") or "")
    status = _STATES.get(state, "running")
    training = _training(job, method)
    loss = job.get("lossConfig") if isinstance(job.get("lossConfig"), Mapping) else {}
    hyperparameters = _openai_hyperparameters(training, loss or {}, method, base_default_lr)
    progress = job.get("jobProgress") or {}
    out: dict[str, Any] = {
        "object": "fine_tuning.job",
        "id": name.rsplit("/", 1)[-1],
        "created_at": _seconds(job.get("createTime")) or 0,
        "finished_at": _seconds(job.get("completedTime")) if status in _TERMINAL else None,
        "model": str(training.get("baseModel") or training.get("warmStartFrom") or ""),
        "status": status,
        "training_file": str(job.get("dataset") or ""),
        "validation_file": job.get("evaluationDataset") or None,
        "hyperparameters": {k: v for k, v in hyperparameters.items() if k != "beta"},
        "method": {"type": method, method: {"hyperparameters": hyperparameters}},
        "fine_tuned_model": _fine_tuned_model(job, training) if status == "succeeded" else None,
        "trained_tokens": _int(progress.get("inputTokens")),
        "result_files": [],
        "error": None,
        "organization_id": "",
        "seed": 0,
        "estimated_finish": None,
        "integrations": None,
        "metadata": None,
    }
    if status == "failed":
        message = (job.get("status") or {}).get("message")
        out["error"] = {
            "code": "job_expired" if state == "JOB_STATE_EXPIRED" else "job_failed",
            "message": str(message or f"Fireworks reports the job as {state} without a message."),
            "param": None,
        }
    suffix = _suffix_of(training, tag_of(job))
    if suffix is not None:
        out["user_provided_suffix"] = suffix
    return out


# --- events ----------------------------------------------------------------------------------------


def events_from_fireworks(job: Mapping[str, Any], notes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """OpenAI `fine_tuning.job.event`s derived from a Fireworks job, newest first.

    From, in the order they happen: creation (`createTime`), the create's hyperparameter `notes`
    (`hyperparameters_for`), progress (`jobProgress`: percent, epoch, tokens; at `updateTime`)
    and the state (at `completedTime`, else `updateTime`; `FAILED`/`EXPIRED` at level `error`
    with `status.message`). Each message names its source. Ids are `ftevent-<job id>-<what>`, the
    same on every call for the same event; the progress and state events' ids carry the values
    and time observed (`progress-50-1-1200`, `state-running-1733300000`), so each change is a new
    event to whoever keeps them. Events of the same second keep that order.
    """
    job_id = str(job.get("name") or "").rsplit("/", 1)[-1]
    created = _seconds(job.get("createTime")) or 0
    updated = _seconds(job.get("updateTime")) or created
    events: list[dict[str, Any]] = []

    def add(what: str, at: int, message: str, *, level: str = "info", data: Any = None) -> None:
        event: dict[str, Any] = {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{job_id}-{what}",
            "created_at": at,
            "level": level,
            "message": message,
            "type": "message" if data is None else "metrics",
        }
        if data is not None:
            event["data"] = data
        events.append(event)

    training = job.get("trainingConfig") if isinstance(job.get("trainingConfig"), Mapping) else job
    base = (training or {}).get("baseModel") or (training or {}).get("warmStartFrom")
    add("created", created, f"Fireworks createTime: job {job_id} created for base model {base}")
    for n, note in enumerate(notes, 1):
        add(f"hyperparameters-{n}", created, f"Gateway hyperparameters: {note}")
    progress = job.get("jobProgress") or {}
    parts = [
        f"{label} {progress[key]}"
        for key, label in (("percent", "percent"), ("epoch", "epoch"), ("inputTokens", "input tokens"))
        if _int(progress.get(key)) is not None
    ]
    if parts:
        data = {
            key: _int(progress[key])
            for key in ("percent", "epoch", "inputTokens")
            if _int(progress.get(key)) is not None
        }
        what = "progress-" + "-".join(str(value) for value in data.values())
        add(what, updated, "Fireworks jobProgress: " + ", ".join(parts), data=data)
    state = str(job.get("state") or "")
    status = _STATES.get(state, "running")
    if state:
        at = (_seconds(job.get("completedTime")) if status in _TERMINAL else None) or updated
        what = f"state-{state.removeprefix('JOB_STATE_').lower().replace('_', '-')}-{at}"
        if status == "failed":
            message = (job.get("status") or {}).get("message") or "no message"
            add(what, at, f"Fireworks state {state}: {message} (status.message)", level="error")
        else:
            text = f"Fireworks state {state}"
            if status == "succeeded":
                text += f" (output model {_fine_tuned_model(job, training or {})})"
            add(what, at, text)
    order = {id(e): n for n, e in enumerate(events)}
    return sorted(events, key=lambda e: (e["created_at"], order[id(e)]), reverse=True)


# --- listing ---------------------------------------------------------------------------------------


def list_params(limit: int, page_token: str | None) -> dict[str, Any]:
    """Query parameters for a list call: `pageSize` (Fireworks caps it at 200), `pageToken`."""
    params: dict[str, Any] = {"pageSize": max(1, min(limit, 200))}
    if page_token:
        params["pageToken"] = page_token
    return params


def page_from_fireworks(answer: Mapping[str, Any], method: Method) -> tuple[list[dict[str, Any]], str | None]:
    """A list answer's jobs (under `supervisedFineTuningJobs` or `dpoJobs`) and the next page token
    (`nextPageToken`; None on the last page)."""
    jobs = [job for job in answer.get(_LIST_KEYS[method]) or [] if isinstance(job, dict)]
    return jobs, answer.get("nextPageToken") or None
