"""Gateway files at providers: copied once per account, reused, awaited until processed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
from tunegate.v1 import files_pb2_grpc, fine_tuning_pb2_grpc

from tests.server.jobs.fakes import FakeProvider
from tests.server.jobs.support import ALICE, ALICE_TENANT, TEAM, create_request, upload
from tests.server.support import error_of

if TYPE_CHECKING:
    Stub = fine_tuning_pb2_grpc.FineTuningAsyncStub
    FilesStub = files_pb2_grpc.FilesAsyncStub

AZURE = (*ALICE_TENANT, ("x-portkey-provider", "azure-openai"), ("authorization", "Bearer az"))


async def test_a_file_is_copied_once_per_account_and_reused(
    jobs: Stub, files: FilesStub, provider: FakeProvider
) -> None:
    training = await upload(files, md=ALICE)
    for _ in range(2):
        await jobs.CreateFineTuningJob(
            create_request(training_file=training, validation_file=training), metadata=ALICE
        )
    assert len(provider.ops("upload_file")) == 1
    sent = [call[2] for call in provider.ops("create_job")]
    assert sent[0]["training_file"] == sent[1]["training_file"] == sent[0]["validation_file"]
    # Another account of the same owner gets its own copy (virtual key, via body options).
    request = create_request(training_file=training)
    request.provider_options.update({"virtual_key": "team"})
    await jobs.CreateFineTuningJob(request, metadata=ALICE_TENANT)
    assert [call[1] for call in provider.ops("upload_file")] == [provider.ops("create_job")[0][1], "vk:team"]


async def test_an_imported_file_is_awaited_until_processed(
    jobs: Stub, files: FilesStub, azure: FakeProvider
) -> None:
    training = await upload(files, md=ALICE)
    azure.upload_status = "uploaded"
    azure.file_statuses = [("uploaded", None), ("uploaded", None)]
    job = await jobs.CreateFineTuningJob(create_request(training_file=training), metadata=AZURE)
    assert job.training_file == training
    assert len(azure.ops("get_file")) == 3
    assert [c[0] for c in azure.calls if c[0] in ("get_file", "create_job")][-1] == "create_job"


async def test_a_file_the_provider_cannot_process_is_a_400(
    jobs: Stub, files: FilesStub, azure: FakeProvider
) -> None:
    training = await upload(files, md=ALICE)
    azure.upload_status = "uploaded"
    azure.file_statuses = [("error", "line 3 is not JSON")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CreateFineTuningJob(create_request(training_file=training), metadata=AZURE)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILE", "training_file")
    assert "line 3 is not JSON" in (info.value.details() or "")
    assert azure.ops("create_job") == []
    azure.upload_status = "processed"  # the failed copy is forgotten: the next job copies again
    await jobs.CreateFineTuningJob(create_request(training_file=training), metadata=AZURE)
    assert len(azure.ops("upload_file")) == 2


async def test_an_upload_naming_a_provider_is_copied_in_the_background(
    jobs: Stub, files: FilesStub, provider: FakeProvider
) -> None:
    training = await upload(files, md=ALICE)
    for _ in range(100):
        if provider.ops("upload_file"):
            break
        await asyncio.sleep(0.02)
    assert len(provider.ops("upload_file")) == 1
    await jobs.CreateFineTuningJob(create_request(training_file=training), metadata=ALICE)
    assert len(provider.ops("upload_file")) == 1  # reused
    await upload(files, md=ALICE_TENANT)  # no provider named: nothing copied
    await upload(files, md=TEAM)
    await asyncio.sleep(0.1)
    assert [call[1] for call in provider.ops("upload_file")][1:] == ["vk:team"]
