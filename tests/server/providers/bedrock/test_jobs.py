"""OpenAI ⇄ Bedrock model-customization-job translations, checked against botocore's service
model (request and answer shapes) and the `openai` SDK's types (job and event shapes)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from tunegate.server.errors import InvalidArgument
from tunegate.server.jobs._render import foreign_job
from tunegate.server.providers.bedrock._convert import FAMILIES, Family, HyperParameter, family_for
from tunegate.server.providers.bedrock._jobs import (
    RESULT_COLUMNS,
    TAG_KEY,
    client_request_token,
    create_params,
    custom_model_name,
    events_from_bedrock,
    hyperparameters_for,
    job_from_bedrock,
    job_from_summary,
    job_name,
    metrics_keys,
    metrics_uris,
    openai_hyperparameters,
    results_csv,
    status_from_bedrock,
)

SERVICE = botocore.session.get_session().get_service_model("bedrock")
# Typed as Any: botocore's stubs type nested shapes (members, member, key, enum) loosely.
CREATE: Any = SERVICE.operation_model("CreateModelCustomizationJob").input_shape
GET: Any = SERVICE.operation_model("GetModelCustomizationJob").output_shape
LIST: Any = SERVICE.operation_model("ListModelCustomizationJobs").output_shape
SUMMARY: Any = LIST.members["modelCustomizationJobSummaries"].member

NOVA = family_for("amazon.nova-micro-v1:0:128k")
TITAN = family_for("amazon.titan-text-express-v1:0:8k")
PREMIER = family_for("amazon.titan-text-premier-v1:0:32k")
LLAMA = family_for("meta.llama3-1-8b-instruct-v1:0:128k")
COHERE = family_for("cohere.command-light-text-v14:7:4k")
# A family whose rate is a multiplier already (as Claude 3 Haiku's is, providers.md §5.6).
HAIKU_LIKE = Family(
    name="haiku-like",
    patterns=("anthropic.claude-3-haiku-*",),
    data_format="bedrock-conversation-2024",
    methods=frozenset({"supervised"}),
    hyperparameters={
        hp.name: hp
        for hp in (
            HyperParameter("epochCount", "n_epochs", 1, 10, 2, integer=True),
            HyperParameter("batchSize", "batch_size", 4, 256, 32, integer=True),
            HyperParameter("learningRateMultiplier", "learning_rate_multiplier", 0.1, 2, 1, integer=False),
        )
    },
)

TAG = "ftjob-AbCdEfGhIjKlMnOpQrStUvWx"
UNIQUE = "AbCdEfGhIjKlMnOpQrStUvWx"
ACCOUNT = "123456789012"
BASE_ARN = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0:128k"
JOB_ARN = (
    f"arn:aws:bedrock:us-east-1:{ACCOUNT}:model-customization-job/amazon.nova-micro-v1:0:128k/a1b2c3d4e5f6"
)
MODEL_ARN = f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/amazon.nova-micro-v1:0:128k/z9y8x7w6v5u4"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/BedrockFineTuning"
T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)  # botocore's are tz-aware UTC too
T0_S = int(T0.timestamp())


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- the service model as oracle ----------------------------------------------------------------


def shape_problems(value: Any, shape: Any, path: str = "") -> list[str]:
    """What botocore's ParamValidator leaves out: unknown keys, patterns, maximum lengths, enums,
    and (for answers) datetime timestamps."""
    problems: list[str] = []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        for key, item in value.items():
            if key not in shape.members:
                problems.append(f"{path}.{key}: not in {shape.name}")
            else:
                problems += shape_problems(item, shape.members[key], f"{path}.{key}")
        problems += [f"{path}.{key}: required" for key in shape.required_members if key not in value]
    elif kind == "list":
        problems += [
            p for i, item in enumerate(value) for p in shape_problems(item, shape.member, f"{path}[{i}]")
        ]
    elif kind == "map":
        for key, item in value.items():
            problems += shape_problems(key, shape.key, f"{path}<key>")
            problems += shape_problems(item, shape.value, f"{path}.{key}")
    elif kind == "string":
        meta = shape.metadata
        if not isinstance(value, str):
            problems.append(f"{path}: not a string")
        elif "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            problems.append(f"{path}: {value!r} does not match {meta['pattern']}")
        elif len(value) > meta.get("max", len(value)) or len(value) < meta.get("min", 0):
            problems.append(f"{path}: length {len(value)} outside {meta.get('min')}–{meta.get('max')}")
        elif shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not in {shape.enum}")
    elif kind == "timestamp" and not isinstance(value, datetime):
        problems.append(f"{path}: not a datetime")
    elif kind == "float" and not isinstance(value, float):
        problems.append(f"{path}: not a float")
    return problems


def assert_valid_create(params: dict[str, Any]) -> None:
    report = ParamValidator().validate(params, CREATE)
    assert not report.has_errors(), report.generate_report()
    assert shape_problems(params, CREATE) == []


def stage(status: str, start: int = 0, end: int | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "creationTime": at(start),
        "lastModifiedTime": at(end if end is not None else start),
    }


def bedrock_job(
    status: str = "InProgress", stages: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A `GetModelCustomizationJob` answer as aiobotocore returns it (ResponseMetadata aside)."""
    job: dict[str, Any] = {
        "jobArn": JOB_ARN,
        "jobName": f"tunegate-{TAG}",
        "outputModelName": f"support-bot-{UNIQUE}",
        "clientRequestToken": f"tunegate-{TAG}",
        "roleArn": ROLE,
        "status": status,
        "creationTime": T0,
        "lastModifiedTime": at(30),
        "baseModelArn": BASE_ARN,
        "hyperParameters": {"epochCount": "3", "learningRate": "2e-05", "learningRateWarmupSteps": "10"},
        "trainingDataConfig": {"s3Uri": "s3://tg-bucket/tunegate/train.jsonl"},
        "validationDataConfig": {"validators": [{"s3Uri": "s3://tg-bucket/tunegate/valid.jsonl"}]},
        "outputDataConfig": {"s3Uri": "s3://tg-bucket/tunegate/output/"},
        "customizationType": "FINE_TUNING",
    }
    if stages is not None:
        job["statusDetails"] = stages
    job.update(extra)
    return job


def summary_of(job: dict[str, Any]) -> dict[str, Any]:
    """The `ListModelCustomizationJobs` summary of a Get answer."""
    keys = (
        "jobArn",
        "baseModelArn",
        "jobName",
        "status",
        "statusDetails",
        "lastModifiedTime",
        "creationTime",
    )
    out = {k: job[k] for k in keys if k in job}
    out.update(customModelName=job["outputModelName"], customizationType=job["customizationType"])
    if "endTime" in job:
        out["endTime"] = job["endTime"]
    if "outputModelArn" in job:
        out["customModelArn"] = job["outputModelArn"]
    return out


DONE = stage("Completed", 1, 5)
NOT_STARTED = stage("NotStarted")
COMPLETED_JOB = bedrock_job(
    "Completed",
    {
        "validationDetails": DONE,
        "dataProcessingDetails": stage("Completed", 5, 9),
        "trainingDetails": stage("Completed", 9, 60),
    },
    endTime=at(61),
    lastModifiedTime=at(61),
    outputModelArn=MODEL_ARN,
    trainingMetrics={"trainingLoss": 0.25},
    validationMetrics=[{"validationLoss": 0.5}],
)
FAILED_JOB = bedrock_job(
    "Failed",
    {
        "validationDetails": stage("Failed", 1, 3),
        "dataProcessingDetails": NOT_STARTED,
        "trainingDetails": NOT_STARTED,
    },
    endTime=at(3),
    failureMessage="Training data has 2 records that are not valid JSON.",
)

# (Bedrock status, statusDetails, OpenAI status)
STATUS_CASES: list[tuple[str, dict[str, Any] | None, str]] = [
    ("InProgress", None, "running"),
    (
        "InProgress",
        {
            "validationDetails": NOT_STARTED,
            "dataProcessingDetails": NOT_STARTED,
            "trainingDetails": NOT_STARTED,
        },
        "queued",
    ),
    (
        "InProgress",
        {
            "validationDetails": stage("InProgress", 1),
            "dataProcessingDetails": NOT_STARTED,
            "trainingDetails": NOT_STARTED,
        },
        "validating_files",
    ),
    (
        "InProgress",
        {
            "validationDetails": DONE,
            "dataProcessingDetails": stage("InProgress", 5),
            "trainingDetails": NOT_STARTED,
        },
        "validating_files",
    ),
    (
        "InProgress",
        {
            "validationDetails": DONE,
            "dataProcessingDetails": stage("Completed", 5, 9),
            "trainingDetails": NOT_STARTED,
        },
        "queued",
    ),
    (
        "InProgress",
        {
            "validationDetails": DONE,
            "dataProcessingDetails": stage("Completed", 5, 9),
            "trainingDetails": stage("InProgress", 9),
        },
        "running",
    ),
    ("Completed", COMPLETED_JOB["statusDetails"], "succeeded"),
    ("Failed", FAILED_JOB["statusDetails"], "failed"),
    ("Failed", None, "failed"),
    (
        "Stopping",
        {
            "validationDetails": DONE,
            "dataProcessingDetails": stage("Completed", 5, 9),
            "trainingDetails": stage("Stopping", 9, 20),
        },
        "cancelled",
    ),
    (
        "Stopped",
        {
            "validationDetails": DONE,
            "dataProcessingDetails": stage("Completed", 5, 9),
            "trainingDetails": stage("Stopped", 9, 21),
        },
        "cancelled",
    ),
]


def job_for(status: str, details: dict[str, Any] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if status in ("Completed", "Failed", "Stopped"):
        extra["endTime"] = at(61)
    if status == "Completed":
        extra["outputModelArn"] = MODEL_ARN
    if status == "Failed":
        extra["failureMessage"] = "boom"
    return bedrock_job(status, details, **extra)


ALL_JOBS = [job_for(s, d) for s, d, _ in STATUS_CASES] + [COMPLETED_JOB, FAILED_JOB]


@pytest.mark.parametrize("job", ALL_JOBS)
def test_fixtures_have_the_service_models_answer_shapes(job: dict[str, Any]) -> None:
    assert shape_problems(job, GET) == []
    assert shape_problems(summary_of(job), SUMMARY) == []


# --- hyperparameters ----------------------------------------------------------------------------


def method(**hyperparameters: Any) -> dict[str, Any]:
    return {"method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}}


def legacy(**hyperparameters: Any) -> dict[str, Any]:
    return {"hyperparameters": hyperparameters}


@pytest.mark.parametrize(
    ("family", "request_", "expected"),
    [
        (NOVA, {}, {}),
        (NOVA, method(), {}),
        (NOVA, method(n_epochs="auto", learning_rate_multiplier="auto", batch_size="auto"), {}),
        (NOVA, method(n_epochs=None, batch_size=None), {}),
        (NOVA, method(n_epochs=3), {"epochCount": "3"}),
        (NOVA, legacy(n_epochs=3), {"epochCount": "3"}),
        (NOVA, method(n_epochs=3.0), {"epochCount": "3"}),
        (NOVA, method(learning_rate_multiplier=2), {"learningRate": "2e-05"}),
        (NOVA, method(learning_rate_multiplier=3.0), {"learningRate": "3e-05"}),  # not 3.0000000000000004e-05
        (NOVA, method(learning_rate_multiplier=10), {"learningRate": "0.0001"}),  # the maximum, exactly
        (NOVA, method(learning_rate_multiplier=0.1), {"learningRate": "1e-06"}),  # the minimum, exactly
        (
            TITAN,
            legacy(n_epochs=10, batch_size=64, learning_rate_multiplier=0.5),
            {"epochCount": "10", "batchSize": "64", "learningRate": "5e-06"},
        ),
        (PREMIER, method(batch_size=1), {"batchSize": "1"}),
        (LLAMA, method(learning_rate_multiplier=1.5), {"learningRate": "0.00015"}),
        (
            HAIKU_LIKE,
            method(learning_rate_multiplier=1.5, batch_size=4),
            {"learningRateMultiplier": "1.5", "batchSize": "4"},
        ),
        (COHERE, method(n_epochs=2, batch_size=8), {"epochCount": "2", "batchSize": "8"}),
        # Both forms, agreeing: accepted, read from the method.
        (NOVA, {**method(n_epochs=2), **legacy(n_epochs=2)}, {"epochCount": "2"}),
        (NOVA, {**method(n_epochs=2), **legacy(n_epochs="auto")}, {"epochCount": "2"}),
    ],
)
def test_hyperparameters_for(family: Family, request_: dict[str, Any], expected: dict[str, str]) -> None:
    params, notes = hyperparameters_for(family, request_)
    assert params == expected
    assert len(notes) == len(expected)
    assert all(isinstance(v, str) for v in params.values())


def test_notes_say_how_a_multiplier_became_a_rate() -> None:
    _, notes = hyperparameters_for(NOVA, method(learning_rate_multiplier=2, n_epochs=4))
    assert (
        "learning_rate_multiplier 2 × amazon-nova default learningRate 1e-05 = 2e-05 sent as learningRate"
        in notes
    )
    assert "n_epochs 4 sent as epochCount '4'" in notes
    _, notes = hyperparameters_for(COHERE, method(n_epochs=2))
    assert notes == [
        "n_epochs 2 sent as epochCount unchecked: the gateway has no range for cohere-command; "
        "Bedrock validates it"
    ]


M = "method.supervised.hyperparameters"


@pytest.mark.parametrize(
    ("family", "request_", "param", "fragment"),
    [
        (NOVA, method(batch_size=4), f"{M}.batch_size", "have no batch_size"),
        (NOVA, legacy(batch_size=4), "hyperparameters.batch_size", "have no batch_size"),
        (NOVA, method(n_epochs=6), f"{M}.n_epochs", "between 1 and 5"),
        (NOVA, legacy(n_epochs=0), "hyperparameters.n_epochs", "between 1 and 5"),
        (TITAN, method(n_epochs=11), f"{M}.n_epochs", "between 1 and 10"),
        (PREMIER, method(batch_size=2), f"{M}.batch_size", "between 1 and 1"),
        (TITAN, method(batch_size=65), f"{M}.batch_size", "between 1 and 64"),
        (NOVA, method(n_epochs=2.5), f"{M}.n_epochs", "must be an integer"),
        (NOVA, method(n_epochs=True), f"{M}.n_epochs", "must be an integer"),
        (NOVA, method(n_epochs="3"), f"{M}.n_epochs", "must be an integer"),
        (NOVA, method(learning_rate_multiplier="2"), f"{M}.learning_rate_multiplier", "must be a number"),
        (
            NOVA,
            method(learning_rate_multiplier=float("nan")),
            f"{M}.learning_rate_multiplier",
            "must be a number",
        ),
        (NOVA, method(learning_rate_multiplier=0), f"{M}.learning_rate_multiplier", "greater than 0"),
        (NOVA, method(learning_rate_multiplier=-1), f"{M}.learning_rate_multiplier", "greater than 0"),
        (NOVA, method(learning_rate_multiplier=11), f"{M}.learning_rate_multiplier", "between 0.1 and 10"),
        (
            NOVA,
            legacy(learning_rate_multiplier=0.05),
            "hyperparameters.learning_rate_multiplier",
            "between 0.1 and 10",
        ),
        (
            LLAMA,
            method(learning_rate_multiplier=0.01),
            f"{M}.learning_rate_multiplier",
            "between 0.05 and 1000",
        ),
        (
            HAIKU_LIKE,
            method(learning_rate_multiplier=2.5),
            f"{M}.learning_rate_multiplier",
            "between 0.1 and 2",
        ),
        (
            COHERE,
            method(learning_rate_multiplier=2),
            f"{M}.learning_rate_multiplier",
            "no default learning rate",
        ),
        (COHERE, method(n_epochs=0), f"{M}.n_epochs", "at least 1"),
        (NOVA, method(beta=0.1), f"{M}.beta", "not a supervised fine-tuning hyperparameter"),
        (NOVA, {**method(n_epochs=2), **legacy(n_epochs=3)}, "hyperparameters", "not both"),
    ],
)
def test_hyperparameters_refused(family: Family, request_: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        hyperparameters_for(family, request_)
    assert info.value.param == param
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("family", "bedrock", "expected"),
    [
        (
            NOVA,
            {"epochCount": "3", "learningRate": "2e-05"},
            {"n_epochs": 3, "learning_rate_multiplier": 2.0, "batch_size": "auto"},
        ),
        (NOVA, {}, {"n_epochs": 2, "learning_rate_multiplier": 1.0, "batch_size": "auto"}),
        (
            TITAN,
            {"batchSize": "8", "learningRate": "0.00001"},
            {"n_epochs": 5, "learning_rate_multiplier": 1.0, "batch_size": 8},
        ),
        (
            NOVA,
            {"epochCount": "not a number"},
            {"n_epochs": 2, "learning_rate_multiplier": 1.0, "batch_size": "auto"},
        ),
        (
            HAIKU_LIKE,
            {"learningRateMultiplier": "0.5"},
            {"n_epochs": 2, "learning_rate_multiplier": 0.5, "batch_size": 32},
        ),
        (
            None,
            {"epochCount": "4", "learningRate": "1e-05"},
            {"n_epochs": 4, "learning_rate_multiplier": "auto", "batch_size": "auto"},
        ),
        (COHERE, {}, {"n_epochs": "auto", "learning_rate_multiplier": "auto", "batch_size": "auto"}),
    ],
)
def test_openai_hyperparameters(
    family: Family | None, bedrock: dict[str, str], expected: dict[str, Any]
) -> None:
    assert openai_hyperparameters(family, bedrock) == expected


def _minimum(hp: HyperParameter) -> float:
    return hp.minimum


def _maximum(hp: HyperParameter) -> float:
    return hp.maximum


def _default(hp: HyperParameter) -> float:
    return hp.default


@pytest.mark.parametrize(
    "family", [f for f in FAMILIES if f.hyperparameters] + [HAIKU_LIKE], ids=lambda f: f.name
)
def test_hyperparameters_round_trip_at_every_families_bounds(family: Family) -> None:
    for pick in (_minimum, _maximum, _default):
        sent: dict[str, Any] = {}
        for hp in family.hyperparameters.values():
            if hp.openai == "learning_rate_multiplier" and hp.name == "learningRate":
                if pick(hp) > 0:
                    sent[hp.openai] = pick(hp) / hp.default
            elif hp.openai is not None:
                sent[hp.openai] = int(pick(hp)) if hp.integer else pick(hp)
        bedrock, _ = hyperparameters_for(family, method(**sent))
        back = openai_hyperparameters(family, bedrock)
        assert {k: back[k] for k in sent} == pytest.approx(sent, rel=1e-12)


# --- names --------------------------------------------------------------------------------------

CUSTOM_MODEL_NAME = CREATE.members["customModelName"]


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        (None, UNIQUE),
        ("", UNIQUE),
        ("support-bot", f"support-bot-{UNIQUE}"),
        ("support_bot", f"support_bot-{UNIQUE}"),
        ("My café model!! v2", f"My-cafe-model-v2-{UNIQUE}"),
        ("--a__b..c--", f"a_b-c-{UNIQUE}"),  # Bedrock allows one separator in a row
        ("a_-b", f"a-b-{UNIQUE}"),
        ("!!!", UNIQUE),
        ("日本語", UNIQUE),
        ("x" * 100, "x" * 38 + f"-{UNIQUE}"),
        ("x" * 37 + "-y", "x" * 37 + f"-{UNIQUE}"),  # cut at a separator: no "--"
    ],
)
def test_custom_model_name(suffix: str | None, expected: str) -> None:
    name = custom_model_name(suffix, TAG)
    assert name == expected
    assert shape_problems(name, CUSTOM_MODEL_NAME) == []


def test_names_fit_bedrock_and_differ_per_job() -> None:
    other = "ftjob-0123456789abcdefghijKLMN"
    for tag in (TAG, other):
        assert shape_problems(job_name(tag), CREATE.members["jobName"]) == []
        assert shape_problems(client_request_token(tag), CREATE.members["clientRequestToken"]) == []
    assert job_name(TAG) != job_name(other)
    assert custom_model_name("same", TAG) != custom_model_name("same", other)
    assert job_name(TAG) == f"tunegate-{TAG}"


@pytest.mark.parametrize("tag", ["", "ftjob-", "ftjob-a_b", "-x", "x" * 55, "ftjob-ab/c"])
def test_a_tag_that_is_not_a_gateway_id_is_a_bug(tag: str) -> None:
    with pytest.raises(ValueError):
        job_name(tag)


# --- create -------------------------------------------------------------------------------------

URIS: dict[str, Any] = {
    "training_uri": "s3://tg-bucket/tunegate/nova/file-abc.jsonl",
    "validation_uri": "s3://tg-bucket/tunegate/nova/file-def.jsonl",
    "output_uri": "s3://tg-bucket/tunegate/output/",
}


@pytest.mark.parametrize(
    ("family", "model", "request_", "extra"),
    [
        (
            NOVA,
            "amazon.nova-micro-v1:0:128k",
            {"suffix": "support-bot", **method(n_epochs=3, learning_rate_multiplier=2)},
            {},
        ),
        (NOVA, BASE_ARN, {}, {"validation_uri": None}),
        (
            TITAN,
            "amazon.titan-text-express-v1:0:8k",
            {"suffix": "Ünïcode & spaces " * 8, **legacy(batch_size=16)},
            {
                "kms_key_id": "alias/tunegate-models",
                "vpc_config": {"subnetIds": ["subnet-0123abcd"], "securityGroupIds": ["sg-0123abcd"]},
            },
        ),
        (
            LLAMA,
            "meta.llama3-1-8b-instruct-v1:0:128k",
            method(n_epochs="auto"),
            {"customization_type": "FINE_TUNING"},
        ),
        (
            COHERE,
            "cohere.command-light-text-v14:7:4k",
            method(n_epochs=2),
            {"customization_type": "CONTINUED_PRE_TRAINING"},
        ),
    ],
)
def test_create_params_pass_botocores_validator(
    family: Family, model: str, request_: dict[str, Any], extra: dict[str, Any]
) -> None:
    kwargs: dict[str, Any] = {**URIS, **extra}
    params, notes = create_params(
        request=request_, family=family, base_model_id=model, tag=TAG, role_arn=ROLE, **kwargs
    )
    assert_valid_create(params)
    assert params["jobName"] == job_name(TAG)
    assert params["clientRequestToken"] == client_request_token(TAG)
    assert params["jobTags"] == [{"key": TAG_KEY, "value": TAG}]
    assert params["baseModelIdentifier"] == model
    assert params["trainingDataConfig"] == {"s3Uri": URIS["training_uri"]}
    assert params["outputDataConfig"] == {"s3Uri": URIS["output_uri"]}
    assert params["hyperParameters" if notes else "jobName"]
    assert ("validationDataConfig" in params) == bool(kwargs["validation_uri"])
    assert ("customModelKmsKeyId" in params) == ("kms_key_id" in extra)
    assert ("vpcConfig" in params) == ("vpc_config" in extra)
    assert params["customizationType"] == extra.get("customization_type", "FINE_TUNING")


def test_create_params_in_full() -> None:
    params, notes = create_params(
        request={"model": "amazon.nova-micro-v1:0:128k", "suffix": "bot", **method(n_epochs=3)},
        family=NOVA,
        base_model_id="amazon.nova-micro-v1:0:128k",
        tag=TAG,
        role_arn=ROLE,
        **URIS,
    )
    assert params == {
        "jobName": f"tunegate-{TAG}",
        "customModelName": f"bot-{UNIQUE}",
        "roleArn": ROLE,
        "clientRequestToken": f"tunegate-{TAG}",
        "baseModelIdentifier": "amazon.nova-micro-v1:0:128k",
        "customizationType": "FINE_TUNING",
        "jobTags": [{"key": "tunegate_job_id", "value": TAG}],
        "customModelTags": [{"key": "tunegate_job_id", "value": TAG}],
        "trainingDataConfig": {"s3Uri": URIS["training_uri"]},
        "validationDataConfig": {"validators": [{"s3Uri": URIS["validation_uri"]}]},
        "outputDataConfig": {"s3Uri": URIS["output_uri"]},
        "hyperParameters": {"epochCount": "3"},
    }
    assert notes == ["n_epochs 3 sent as epochCount '3'"]


def test_create_params_refuse_bad_hyperparameters_before_anything_else() -> None:
    with pytest.raises(InvalidArgument) as info:
        create_params(
            request=method(batch_size=8),
            family=NOVA,
            base_model_id="amazon.nova-micro-v1:0:128k",
            tag=TAG,
            role_arn=ROLE,
            **URIS,
        )
    assert info.value.param == f"{M}.batch_size"


# --- jobs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "details", "expected"), STATUS_CASES)
def test_status_mapping(status: str, details: dict[str, Any] | None, expected: str) -> None:
    job = job_for(status, details)
    assert status_from_bedrock(job) == expected
    openai_job = job_from_bedrock(job)
    assert openai_job["status"] == expected
    FineTuningJob.model_validate(openai_job)
    assert foreign_job(openai_job).id == job["jobName"]  # the gateway's codec reads it too
    assert openai_job["finished_at"] == (int(at(61).timestamp()) if "endTime" in job else None)
    summary = job_from_summary(summary_of(job))
    assert summary["status"] == expected
    FineTuningJob.model_validate(summary)


def test_a_completed_job() -> None:
    job = job_from_bedrock(COMPLETED_JOB)
    assert FineTuningJob.model_validate(job).status == "succeeded"
    assert job == {
        "object": "fine_tuning.job",
        "id": f"tunegate-{TAG}",
        "model": "amazon.nova-micro-v1:0:128k",
        "created_at": T0_S,
        "finished_at": T0_S + 61 * 60,
        "status": "succeeded",
        "error": None,
        "fine_tuned_model": MODEL_ARN,
        "organization_id": "",
        "training_file": "s3://tg-bucket/tunegate/train.jsonl",
        "validation_file": "s3://tg-bucket/tunegate/valid.jsonl",
        "result_files": [],
        "trained_tokens": None,
        "estimated_finish": None,
        "integrations": None,
        "seed": 0,
        "metadata": None,
        "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": 2.0, "n_epochs": 3},
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": 2.0, "n_epochs": 3}
            },
        },
        "user_provided_suffix": "support-bot",
    }


@pytest.mark.parametrize(
    ("failed_stage", "code"),
    [
        ("validationDetails", "validation_failed"),
        ("dataProcessingDetails", "data_processing_failed"),
        ("trainingDetails", "training_failed"),
        (None, "job_failed"),
    ],
)
def test_a_failed_job_names_the_stage(failed_stage: str | None, code: str) -> None:
    details = {key: DONE for key in ("validationDetails", "dataProcessingDetails", "trainingDetails")}
    if failed_stage:
        details[failed_stage] = stage("Failed", 2, 3)
    job = job_from_bedrock(bedrock_job("Failed", details, endTime=at(3), failureMessage="Bad records."))
    assert job["error"] == {"code": code, "message": "Bad records.", "param": None}
    assert job["fine_tuned_model"] is None
    assert FineTuningJob.model_validate(job).error is not None


def test_a_failed_job_without_a_message_still_has_one() -> None:
    job = job_from_bedrock(bedrock_job("Failed", endTime=at(3)))
    assert job["error"]["message"]
    assert job_from_summary(summary_of(bedrock_job("Failed", endTime=at(3))))["error"]["message"]


def test_jobs_the_gateway_did_not_create() -> None:
    foreign = bedrock_job(
        "InProgress",
        jobName="my-own-job",
        outputModelName="my-model",
        baseModelArn="arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0:200k",
        customizationType="DISTILLATION",
        hyperParameters={"epochCount": "2"},
        validationDataConfig={"validators": []},
    )
    assert shape_problems(foreign, GET) == []
    job = job_from_bedrock(foreign)
    FineTuningJob.model_validate(job)
    assert job["id"] == "my-own-job"
    assert job["model"] == "anthropic.claude-3-haiku-20240307-v1:0:200k"
    assert job["validation_file"] is None
    assert "user_provided_suffix" not in job
    assert "method" not in job  # not supervised fine-tuning
    assert job["hyperparameters"] == {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": 2}
    # The caller may name the family (a table the gateway knows for that model).
    assert job_from_bedrock(foreign, family=HAIKU_LIKE)["hyperparameters"]["batch_size"] == 32


def test_a_job_without_a_suffix_reports_none() -> None:
    job = job_from_bedrock(bedrock_job(outputModelName=UNIQUE))
    assert "user_provided_suffix" not in job


def test_a_summary() -> None:
    job = job_from_summary(summary_of(COMPLETED_JOB))
    FineTuningJob.model_validate(job)
    assert job["fine_tuned_model"] == MODEL_ARN
    assert job["hyperparameters"] == {}
    assert job["training_file"] == ""
    assert job["user_provided_suffix"] == "support-bot"
    assert "method" not in job


# --- events -------------------------------------------------------------------------------------


def test_events_of_a_completed_job() -> None:
    notes = [
        "learning_rate_multiplier 2 × amazon-nova default learningRate 1e-05 = 2e-05 sent as learningRate"
    ]
    events = events_from_bedrock(COMPLETED_JOB, notes)
    for event in events:
        FineTuningJobEvent.model_validate(event)
    name = f"tunegate-{TAG}"
    assert [e["id"].removeprefix(f"ftevent-{name}-") for e in events] == [
        "completed",
        "valid-loss-1",
        "train-loss",
        "training-completed",
        "training-started",
        "dataprocessing-completed",
        "dataprocessing-started",  # the same second as the next: kept in the order they happen
        "validation-completed",
        "validation-started",
        "hyperparameters-1",
        "created",
    ]
    times = [e["created_at"] for e in events]
    assert times == sorted(times, reverse=True)
    by_id = {e["id"].removeprefix(f"ftevent-{name}-"): e for e in events}
    assert (
        by_id["training-completed"]["message"]
        == "Bedrock statusDetails.trainingDetails: Completed (training completed)"
    )
    assert by_id["training-started"]["message"].startswith(
        "Bedrock statusDetails.trainingDetails: InProgress"
    )
    assert by_id["hyperparameters-1"]["message"] == f"Gateway hyperparameters: {notes[0]}"
    assert by_id["train-loss"]["type"] == "metrics"
    assert by_id["train-loss"]["data"] == {"train_loss": 0.25}
    assert by_id["valid-loss-1"]["data"] == {"valid_loss": 0.5}
    assert MODEL_ARN in by_id["completed"]["message"]
    assert all(e["message"].startswith(("Bedrock ", "Gateway ")) for e in events)
    assert events == events_from_bedrock(COMPLETED_JOB, notes)  # deterministic


@pytest.mark.parametrize(("status", "details", "_expected"), STATUS_CASES)
def test_events_of_every_status(status: str, details: dict[str, Any] | None, _expected: str) -> None:
    events = events_from_bedrock(job_for(status, details))
    for event in events:
        FineTuningJobEvent.model_validate(event)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    assert events[-1]["id"].endswith("-created")
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events), reverse=True)


def test_a_failure_is_an_error_event() -> None:
    events = events_from_bedrock(FAILED_JOB)
    errors = [e for e in events if e["level"] == "error"]
    assert [e["message"] for e in errors] == [
        "Bedrock status: Failed: Training data has 2 records that are not valid JSON.",
        "Bedrock statusDetails.validationDetails: Failed (validation failed)",
    ]
    assert events[0]["message"].startswith("Bedrock status: Failed")


def test_a_stop_request_is_an_event() -> None:
    job = job_for(*STATUS_CASES[-2][:2])
    assert job["status"] == "Stopping"
    assert events_from_bedrock(job)[0]["message"] == "Bedrock status: Stopping (a stop was requested)"


# --- metrics and result files -----------------------------------------------------------------------


def test_metrics_keys_and_uris() -> None:
    keys = metrics_keys(COMPLETED_JOB)
    assert (
        keys.training
        == "model-customization-job-a1b2c3d4e5f6/training_artifacts/step_wise_training_metrics.csv"
    )
    assert keys.validation == (
        "model-customization-job-a1b2c3d4e5f6/validation_artifacts/post_fine_tuning_validation/validation_metrics.csv",
        "model-customization-job-a1b2c3d4e5f6/validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv",
    )
    uris = metrics_uris(COMPLETED_JOB)
    assert uris.training == f"s3://tg-bucket/tunegate/output/{keys.training}"
    assert uris.validation[0] == f"s3://tg-bucket/tunegate/output/{keys.validation[0]}"
    assert metrics_keys(summary_of(COMPLETED_JOB)) == keys


TRAINING_CSV = (
    b"step_number,epoch_number,training_loss,perplexity\n"
    b"0,0,2.5,12.18\n1,0,2.0,7.39\n2,1,1.5,4.48\n3,1,1.25,3.49\n"
)
VALIDATION_CSV = b"step_number,epoch_number,validation_loss,perplexity\r\n1,0,2.1,8.17\r\n3,1,1.4,4.06\r\n"


def rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


@pytest.mark.parametrize(
    ("job", "training", "validation", "expected"),
    [
        (
            COMPLETED_JOB,
            TRAINING_CSV,
            VALIDATION_CSV,
            [
                ["1", "2.5", "", "", ""],
                ["2", "2.0", "", "2.1", ""],
                ["3", "1.5", "", "", ""],
                ["4", "1.25", "", "1.4", ""],
            ],
        ),
        # No validation file: Bedrock's final validation loss goes on the last step.
        (
            COMPLETED_JOB,
            TRAINING_CSV,
            None,
            [
                ["1", "2.5", "", "", ""],
                ["2", "2.0", "", "", ""],
                ["3", "1.5", "", "", ""],
                ["4", "1.25", "", "0.5", ""],
            ],
        ),
        # A UTF-8 BOM, spaces and a bad row; steps restarting in each epoch are renumbered.
        (
            bedrock_job("Completed"),
            "\ufeffstep_number, epoch_number, training_loss, perplexity\n"
            "0,1,2.5,1\n1,1,2.0,1\nx,1,9,1\n0,2,1.5,1\n1,2,1.0,1\n".encode(),
            None,
            [
                ["1", "2.5", "", "", ""],
                ["2", "2.0", "", "", ""],
                ["3", "1.5", "", "", ""],
                ["4", "1.0", "", "", ""],
            ],
        ),
        # No files: one final row from the job's own metrics.
        (COMPLETED_JOB, None, None, [["1", "0.25", "", "0.5", ""]]),
        (COMPLETED_JOB, b"", b"not,a,metrics,file\n1,2,3,4\n", [["1", "0.25", "", "0.5", ""]]),
        (
            bedrock_job("Completed", trainingMetrics={"trainingLoss": 0.75}),
            None,
            None,
            [["1", "0.75", "", "", ""]],
        ),
        # Nothing at all: the header alone.
        (bedrock_job("InProgress"), None, None, []),
    ],
)
def test_results_csv(
    job: dict[str, Any], training: bytes | None, validation: bytes | None, expected: list[list[str]]
) -> None:
    assert shape_problems(job, GET) == []
    out = results_csv(job, training, validation)
    assert rows(out) == [list(RESULT_COLUMNS), *expected]
    assert out.startswith(b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n")


def test_the_shape_checks_catch_what_they_should() -> None:
    params, _ = create_params(
        request={}, family=NOVA, base_model_id="amazon.nova-micro-v1:0:128k", tag=TAG, role_arn=ROLE, **URIS
    )
    assert_valid_create(params)
    for broken, problem in [
        ({**params, "customModelName": "a__b"}, "does not match"),
        ({**params, "jobName": "x" * 64}, "length 64"),
        ({**params, "customizationType": "DPO"}, "not in"),
        ({**params, "hyperParameters": {"epochCount": 2}}, "not a string"),
        ({**params, "bogus": 1}, "not in CreateModelCustomizationJobRequest"),
    ]:
        assert any(problem in p for p in shape_problems(broken, CREATE)), broken
    missing = {k: v for k, v in params.items() if k != "roleArn"}
    assert ParamValidator().validate(missing, CREATE).has_errors()
    assert shape_problems({**COMPLETED_JOB, "creationTime": "2026-12-01T10:00:00Z"}, GET)
