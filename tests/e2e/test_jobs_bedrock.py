"""Fine-tuning on AWS Bedrock through the official SDKs, against moto's S3 and Bedrock on
loopback: files converted to the model family's format and streamed to S3, jobs created, read,
listed, cancelled and followed to the end, every bad input a clear 400 before any cost."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import openai
import pytest
from portkey_ai import Portkey

from tests.e2e.bedrock import (
    AWS_HEADERS,
    BUCKET,
    JOB_ROLE,
    KEY_ID,
    REGION,
    SECRET,
    BedrockStack,
    bedrock,  # noqa: F401  (fixture)
    moto_url,  # noqa: F401  (fixture)
    wait_for,
)

TENANT = {"x-portkey-api-key": "pk-bedrock-tenant"}


def chat_line(i: int, *, system: bool = True, turns: int = 1) -> dict[str, Any]:
    messages: list[dict[str, Any]] = (
        [{"role": "system", "content": "You answer in one word."}] if system else []
    )
    for t in range(turns):
        messages.append({"role": "user", "content": f"Question {i}.{t}: what is {i}+{t}? ünïcødé ✓"})
        messages.append({"role": "assistant", "content": f"{i + t}"})
    return {"messages": messages}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def client(stack: BedrockStack, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.gateway.base_url,
        api_key="placeholder",
        default_headers={**TENANT, **AWS_HEADERS, **headers},
        max_retries=0,
    )


def upload(sdk: openai.OpenAI, data: bytes, name: str = "train.jsonl") -> str:
    return sdk.files.create(file=(name, data), purpose="fine-tune").id


def read_s3(stack: BedrockStack, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body: bytes = stack.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def settled(sdk: openai.OpenAI, job_id: str) -> Any:
    """The job once it has left `validating_files` (its files staged, the create sent)."""
    return wait_for(
        lambda: (job := sdk.fine_tuning.jobs.retrieve(job_id)).status != "validating_files" and job,
        what=f"{job_id} to leave validating_files",
    )


def create_settled(sdk: openai.OpenAI, file_id: str, model: str = "amazon.nova-micro-v1:0") -> Any:
    """A job created with the test role, once its file is staged and Bedrock has it."""
    job = sdk.fine_tuning.jobs.create(model=model, training_file=file_id, extra_body={"role_arn": JOB_ROLE})
    return settled(sdk, job.id)


def test_guide_example_titan_prompt_completion(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock)
    lines = [chat_line(i) for i in range(20)]
    file_id = upload(sdk, jsonl(lines))
    job = sdk.fine_tuning.jobs.create(
        model="amazon.titan-text-lite-v1:0",
        suffix="titan-guide",
        training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        extra_body={"provider_options": {"model": "amazon.titan-text-lite-v1:0:4k", "role_arn": JOB_ROLE}},
    )
    assert job.id.startswith("ftjob-") and job.training_file == file_id
    assert job.status == "validating_files"  # staging runs in the background
    job = settled(sdk, job.id)
    assert job.status == "running", job.error
    native = bedrock.job_for(job.id)
    assert native is not None
    assert native.base_model_identifier == "amazon.titan-text-lite-v1:0:4k"
    assert native.hyper_parameters == {"epochCount": "1"}
    assert native.role_arn == JOB_ROLE
    assert native.client_request_token
    assert native.custom_model_name.startswith("titan-guide")
    uri = native.training_data_config["s3Uri"]
    assert uri.startswith(f"s3://{BUCKET}/") and file_id in uri and not job.training_file.startswith("s3://")
    converted = [json.loads(line) for line in read_s3(bedrock, uri).splitlines()]
    assert converted == [
        {
            "prompt": "You answer in one word.\n\n" + line["messages"][1]["content"],
            "completion": line["messages"][2]["content"],
        }
        for line in lines
    ]
    assert job.fine_tuned_model is None and job.model == "amazon.titan-text-lite-v1:0:4k"


def test_nova_conversation_multi_turn_and_reuse(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock, **{"x-portkey-aws-s3-object-key": "nova-runs"})
    lines = [chat_line(i, turns=2) for i in range(5)] + [chat_line(9, system=False)]
    file_id = upload(sdk, jsonl(lines))
    first = create_settled(sdk, file_id, "amazon.nova-micro-v1:0:128k")
    second = create_settled(sdk, file_id, "amazon.nova-micro-v1:0:128k")
    assert first.status == second.status == "running"
    uri = bedrock.job_for(first.id).training_data_config["s3Uri"]
    # Converted once per (file, family, bucket, prefix): the second job reuses the object.
    assert bedrock.job_for(second.id).training_data_config["s3Uri"] == uri
    assert uri.startswith(f"s3://{BUCKET}/nova-runs/")
    converted = [json.loads(line) for line in read_s3(bedrock, uri).splitlines()]
    assert converted[0] == {
        "schemaVersion": "bedrock-conversation-2024",
        "system": [{"text": "You answer in one word."}],
        "messages": [
            {"role": "user", "content": [{"text": lines[0]["messages"][1]["content"]}]},
            {"role": "assistant", "content": [{"text": "0"}]},
            {"role": "user", "content": [{"text": lines[0]["messages"][3]["content"]}]},
            {"role": "assistant", "content": [{"text": "1"}]},
        ],
    }
    assert "system" not in converted[-1]
    assert len(converted) == len(lines)


def test_lossy_lines_fail_the_job_listing_every_line(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock, **{"x-portkey-aws-s3-object-key": "lossy"})
    lines = [chat_line(0), chat_line(1, turns=2), chat_line(2), chat_line(3, turns=3)]
    lines[2]["messages"][1]["content"] = [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    file_id = upload(sdk, jsonl(lines))
    job = sdk.fine_tuning.jobs.create(
        model="amazon.titan-text-express-v1", training_file=file_id, extra_body={"role_arn": JOB_ROLE}
    )
    job = settled(sdk, job.id)
    assert job.status == "failed"
    assert job.error is not None and job.error.code == "invalid_training_file"
    assert job.error.param == "training_file"
    for number in ("2", "3", "4"):
        assert number in job.error.message
    assert bedrock.job_for(job.id) is None  # nothing was created at Bedrock
    s3 = bedrock.s3()
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="lossy/").get("KeyCount") == 0
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    registry = openai.OpenAI(base_url=bedrock.gateway.base_url, api_key="x", default_headers=TENANT)
    listed = registry.fine_tuning.jobs.list(limit=100)
    assert job.id in [j.id for j in listed.data]
    assert registry.fine_tuning.jobs.retrieve(job.id).status == "failed"


def test_multipart_upload_with_sse_kms(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(
        bedrock,
        **{
            "x-portkey-aws-s3-object-key": "kms",
            "x-portkey-amz-server-side-encryption": "aws:kms",
            "x-portkey-amz-server-side-encryption-aws-kms-key-id": "alias/training",
        },
    )
    filler = "x" * 4000
    lines = [
        {"messages": [{"role": "user", "content": f"{i} {filler}"}, {"role": "assistant", "content": str(i)}]}
        for i in range(3000)
    ]
    data = jsonl(lines)
    assert len(data) > 11 * 1024 * 1024  # three 5 MiB parts at least
    file_id = upload(sdk, data)
    job = create_settled(sdk, file_id, "meta.llama3-1-8b-instruct-v1:0")
    assert job.status == "running", job.error
    uri = bedrock.job_for(job.id).training_data_config["s3Uri"]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    head = bedrock.s3().head_object(Bucket=bucket, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/training")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    converted = read_s3(bedrock, uri).splitlines()
    assert len(converted) == len(lines)
    assert json.loads(converted[-1]) == {"prompt": f"2999 {filler}", "completion": "2999"}


@pytest.mark.parametrize(
    ("body", "headers", "param", "code"),
    [
        (
            {"model": "amazon.nova-micro-v1:0"},
            {"x-portkey-aws-s3-bucket": ""},
            "x-portkey-aws-s3-bucket",
            None,
        ),
        ({"model": "anthropic.claude-9"}, {}, "model", "model_not_supported"),
        ({"model": "amazon.nova-micro-v1:0", "method": {"type": "dpo", "dpo": {}}}, {}, "method.type", None),
        (
            {"model": "amazon.nova-micro-v1:0", "hyperparameters": {"n_epochs": 9}},
            {},
            "hyperparameters.n_epochs",
            None,
        ),
        (
            {
                "model": "amazon.nova-micro-v1:0",
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
            },
            {},
            "method.supervised.hyperparameters.batch_size",
            None,
        ),
        ({"model": "amazon.nova-micro-v1:0", "role_arn": None}, {}, "role_arn", "missing_provider_option"),
        (
            {"model": "amazon.nova-micro-v1:0", "provider_options": {"colour": "blue"}},
            {},
            "provider_options.colour",
            None,
        ),
        (
            {"model": "amazon.nova-micro-v1:0"},
            {"x-portkey-aws-s3-bucket": "Not_A_Bucket"},
            "x-portkey-aws-s3-bucket",
            None,
        ),
    ],
)
def test_bad_requests_are_refused_before_any_cost(
    bedrock: BedrockStack,  # noqa: F811
    body: dict[str, Any],
    headers: dict[str, str],
    param: str,
    code: str | None,
) -> None:
    sdk = client(bedrock)
    file_id = upload(sdk, jsonl([chat_line(0)]))
    request: dict[str, Any] = {"training_file": file_id, "role_arn": JOB_ROLE, **body}
    if request.get("role_arn") is None:
        request.pop("role_arn")
    before = len(bedrock.jobs())
    answer = httpx.post(
        f"{bedrock.gateway.base_url}/fine_tuning/jobs",
        json=request,
        headers={**TENANT, **AWS_HEADERS, **headers, "authorization": "Bearer placeholder"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert len(bedrock.jobs()) == before


def test_follow_a_job_to_the_end(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock)
    file_id = upload(sdk, jsonl([chat_line(i) for i in range(4)]))
    job = settled(
        sdk,
        sdk.fine_tuning.jobs.create(
            model="amazon.titan-text-express-v1",
            training_file=file_id,
            hyperparameters={"n_epochs": 2, "learning_rate_multiplier": 2},
            extra_body={"role_arn": JOB_ROLE},
        ).id,
    )
    native = bedrock.job_for(job.id)
    assert native.hyper_parameters["epochCount"] == "2"
    assert float(native.hyper_parameters["learningRate"]) == pytest.approx(2e-5)
    events = sdk.fine_tuning.jobs.list_events(job.id).data
    assert events and all(e.object == "fine_tuning.job.event" for e in events)
    assert any("learning_rate_multiplier" in e.message for e in events)

    # What moto does not emulate: the job finishing, and the metrics Bedrock writes.
    native.status = "Completed"
    output = native.output_data_config["s3Uri"]
    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded"
    assert done.fine_tuned_model == native.output_model_arn
    assert done.hyperparameters.n_epochs == 2
    assert done.result_files and done.result_files[0].startswith("file-")
    content = sdk.files.content(done.result_files[0]).text
    rows = list(csv.reader(io.StringIO(content)))
    assert rows[0][0] == "step" and len(rows) >= 2
    assert output.startswith("s3://")

    listed = sdk.fine_tuning.jobs.list(limit=100)
    assert job.id in [j.id for j in listed.data]


def test_cancel_stops_the_bedrock_job(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock)
    file_id = upload(sdk, jsonl([chat_line(0)]))
    job = create_settled(sdk, file_id, "amazon.nova-lite-v1:0:300k")
    cancelled = sdk.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.id == job.id
    assert bedrock.job_for(job.id).status == "Stopped"
    with pytest.raises(openai.BadRequestError):
        sdk.fine_tuning.jobs.pause(job.id)
    with pytest.raises(openai.BadRequestError):
        sdk.fine_tuning.jobs.checkpoints.list(job.id)


def test_idempotent_retry_makes_one_bedrock_job(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock)
    file_id = upload(sdk, jsonl([chat_line(0)]))
    request = {"model": "amazon.nova-micro-v1:0", "training_file": file_id, "role_arn": JOB_ROLE}
    headers = {**TENANT, **AWS_HEADERS, "authorization": "Bearer x", "idempotency-key": "retry-bedrock-1"}
    url = f"{bedrock.gateway.base_url}/fine_tuning/jobs"
    first = httpx.post(url, json=request, headers=headers, timeout=30).json()
    second = httpx.post(url, json=request, headers=headers, timeout=30).json()
    assert first["id"] == second["id"]
    settled(sdk, first["id"])
    third = httpx.post(url, json=request, headers=headers, timeout=30).json()
    assert third["id"] == first["id"] and third["status"] == "running"
    assert (
        len([j for j in bedrock.jobs().values() if j.job_name == bedrock.job_for(first["id"]).job_name]) == 1
    )


def test_virtual_key_and_portkey_sdk(bedrock: BedrockStack) -> None:  # noqa: F811
    portkey = Portkey(
        base_url=bedrock.gateway.base_url,
        api_key="pk-bedrock-tenant",
        provider="bedrock",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        aws_region=REGION,
        aws_s3_bucket=BUCKET,
    )
    file_id = portkey.files.create(file=("p.jsonl", jsonl([chat_line(0)])), purpose="fine-tune").id
    assert file_id is not None
    # Portkey's SDK puts extra keyword arguments in the body, where Portkey reads `role_arn`.
    job = portkey.fine_tuning.jobs.create(
        model="amazon.nova-micro-v1:0", training_file=file_id, role_arn=JOB_ROLE
    )
    assert job.status == "validating_files"
    vk = openai.OpenAI(
        base_url=bedrock.gateway.base_url,
        api_key="placeholder",
        default_headers={**TENANT, "x-portkey-virtual-key": "aws-team"},
        max_retries=0,
    )
    job2 = settled(vk, vk.fine_tuning.jobs.create(model="amazon.nova-micro-v1:0", training_file=file_id).id)
    assert job2.status == "running" and bedrock.job_for(job2.id).role_arn == JOB_ROLE


def test_custom_host_must_be_allowed(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock, **{"x-portkey-custom-host": "http://169.254.169.254"})
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.fine_tuning.jobs.list()
    assert caught.value.body["param"] == "x-portkey-custom-host"  # type: ignore[index]


def test_provider_listing_pages_with_bedrock_tokens(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock)
    file_id = upload(sdk, jsonl([chat_line(0)]))
    ids = [create_settled(sdk, file_id, "amazon.nova-micro-v1:0").id for _ in range(3)]
    seen: list[str] = []
    page = sdk.fine_tuning.jobs.list(limit=2)
    while True:
        assert len(page.data) <= 2
        seen.extend(j.id for j in page.data)
        if not page.has_more:
            break
        page = sdk.fine_tuning.jobs.list(limit=2, after=page.data[-1].id)
    assert len(seen) == len(set(seen)) == len(bedrock.jobs())  # every Bedrock job once
    assert set(ids) <= set(seen)  # registry jobs under their gateway ids
    assert not any(i.startswith("s3://") or "nextToken" in i for i in seen)


def test_result_file_from_the_step_wise_metrics(bedrock: BedrockStack) -> None:  # noqa: F811
    sdk = client(bedrock)
    file_id = upload(sdk, jsonl([chat_line(0)]))
    job = create_settled(sdk, file_id, "amazon.nova-micro-v1:0")
    native = bedrock.job_for(job.id)
    bucket, _, prefix = native.output_data_config["s3Uri"].removeprefix("s3://").partition("/")
    folder = f"{prefix.rstrip('/')}/model-customization-job-{native.job_arn.rsplit('/', 1)[-1]}"
    bedrock.s3().put_object(
        Bucket=bucket,
        Key=f"{folder}/training_artifacts/step_wise_training_metrics.csv",
        Body=b"step_number,epoch_number,training_loss,perplexity\n0,0,2.5,12.1\n1,0,1.75,5.7\n2,1,0.5,1.6\n",
    )
    native.status = "Completed"
    done = sdk.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and len(done.result_files) == 1
    rows = list(csv.reader(io.StringIO(sdk.files.content(done.result_files[0]).text)))
    assert rows[0] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("1", "2.5"), ("2", "1.75"), ("3", "0.5")]
    assert sdk.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"


async def test_grpc_metadata_routes_alike(bedrock: BedrockStack) -> None:  # noqa: F811
    import grpc
    from tunegate.v1 import fine_tuning_pb2, fine_tuning_pb2_grpc

    sdk = client(bedrock)
    file_id = upload(sdk, jsonl([chat_line(0)]))
    metadata = tuple((k, v) for k, v in {**TENANT, **AWS_HEADERS}.items() if k != "authorization")
    async with grpc.aio.insecure_channel(bedrock.gateway.grpc_target) as channel:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        job = await stub.CreateFineTuningJob(
            fine_tuning_pb2.CreateFineTuningJobRequest(
                model="amazon.nova-micro-v1:0",
                training_file=file_id,
                role_arn=JOB_ROLE,
                request_id="grpc-bedrock",
            ),
            metadata=metadata,
        )
        assert job.id.startswith("ftjob-") and job.status == fine_tuning_pb2.JobStatus.Value(
            "JOB_STATUS_VALIDATING_FILES"
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateFineTuningJob(
                fine_tuning_pb2.CreateFineTuningJobRequest(
                    model="amazon.nova-micro-v1:0", training_file=file_id
                ),
                metadata=tuple((k, v) for k, v in metadata if k != "x-portkey-aws-secret-access-key"),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "x-portkey-aws-secret-access-key" in (err.value.details() or "")
    wait_for(lambda: sdk.fine_tuning.jobs.retrieve(job.id).status == "running", what="the gRPC job")
