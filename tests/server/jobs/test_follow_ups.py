"""Retrieve, list, events, checkpoints, cancel/pause/resume over gRPC."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from tunegate.server.app import GatewayServer
from tunegate.server.providers.interface import Capability
from tunegate.v1 import files_pb2_grpc, fine_tuning_pb2_grpc
from tunegate.v1 import fine_tuning_pb2 as ft

from tests.server.jobs.fakes import FakeProvider
from tests.server.jobs.support import ALICE, ALICE_BARE, ALICE_TENANT, BOB, TEAM, as_json, create_request
from tests.server.support import Metadata, error_of

if TYPE_CHECKING:
    Stub = fine_tuning_pb2_grpc.FineTuningAsyncStub
    FilesStub = files_pb2_grpc.FilesAsyncStub


def native_of(provider: FakeProvider, job_id: str) -> str:
    [(native, _)] = [(n, j) for n, j in provider.jobs.items() if j["metadata"]["tunegate_tag"] == job_id]
    return native


async def test_retrieve_refreshes_from_the_provider(jobs: Stub, provider: FakeProvider) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)
    provider.jobs[native_of(provider, job.id)]["status"] = "running"
    got = await jobs.GetFineTuningJob(
        ft.GetFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=ALICE_BARE
    )
    assert (got.id, got.status) == (job.id, ft.JOB_STATUS_RUNNING)
    assert len(provider.ops("get_job")) == 1
    # Without the credential: the registry's snapshot (now `running`), no provider call.
    got = await jobs.GetFineTuningJob(
        ft.GetFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=ALICE_TENANT
    )
    assert got.status == ft.JOB_STATUS_RUNNING and len(provider.ops("get_job")) == 1
    json = as_json(got)
    assert json["object"] == "fine_tuning.job" and json["error"] is None and json["finished_at"] is None


async def test_mutations_without_the_credential_are_unauthenticated(
    jobs: Stub, provider: FakeProvider
) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.CancelFineTuningJob(
            ft.CancelFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=ALICE_TENANT
        )
    assert error_of(info.value) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS", None)
    assert "openai" in (info.value.details() or "")
    assert provider.ops("cancel_job") == []


async def test_cancel_pause_resume(jobs: Stub, provider: FakeProvider) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)
    ref = {"fine_tuning_job_id": job.id}
    paused = await jobs.PauseFineTuningJob(ft.PauseFineTuningJobRequest(**ref), metadata=ALICE_BARE)
    assert paused.status == ft.JOB_STATUS_PAUSED
    resumed = await jobs.ResumeFineTuningJob(ft.ResumeFineTuningJobRequest(**ref), metadata=ALICE)
    assert resumed.status == ft.JOB_STATUS_RUNNING
    cancelled = await jobs.CancelFineTuningJob(ft.CancelFineTuningJobRequest(**ref), metadata=ALICE)
    assert (cancelled.id, cancelled.status) == (job.id, ft.JOB_STATUS_CANCELLED)
    native = native_of(provider, job.id)
    assert [c for c in provider.calls if c[0].endswith("_job") and c[0] != "create_job"] == [
        ("pause_job", native),
        ("resume_job", native),
        ("cancel_job", native),
    ]
    got = await jobs.GetFineTuningJob(
        ft.GetFineTuningJobRequest(**ref), metadata=ALICE_TENANT
    )  # snapshot followed
    assert got.status == ft.JOB_STATUS_CANCELLED


async def test_pause_on_a_provider_without_it_is_unsupported(jobs: Stub, azure: FakeProvider) -> None:
    md = (*ALICE_TENANT, ("x-portkey-provider", "azure-openai"), ("authorization", "Bearer az"))
    job = await jobs.CreateFineTuningJob(create_request(), metadata=md)
    for metadata in (md, ALICE_TENANT):  # with or without the credential
        for call in (
            jobs.PauseFineTuningJob(
                ft.PauseFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=metadata
            ),
            jobs.ResumeFineTuningJob(
                ft.ResumeFineTuningJobRequest(fine_tuning_job_id=job.id), metadata=metadata
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_BY_PROVIDER", None)
    assert [c[0] for c in azure.calls if c[0] in ("pause_job", "resume_job", "cancel_job")] == []


async def test_registry_list_pages_newest_first_with_exact_has_more(jobs: Stub) -> None:
    created = [(await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)).id for _ in range(5)]
    bobs = await jobs.CreateFineTuningJob(create_request(), metadata=BOB)  # another owner's
    seen: list[str] = []
    after = ""
    while True:
        page = await jobs.ListFineTuningJobs(
            ft.ListFineTuningJobsRequest(after=after, limit=2), metadata=ALICE_BARE
        )
        seen += [job.id for job in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == created[::-1]
    end = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(after=created[0]), metadata=ALICE_BARE)
    assert (list(end.data), end.has_more) == ([], False)
    default = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(), metadata=ALICE_BARE)
    assert len(default.data) == 5 and not default.has_more
    for bad in (0, 101):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(limit=bad), metadata=ALICE_BARE)
        assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE", "limit")
    for cursor in ("ftjob-" + "z" * 24, bobs.id, "not-a-job-id"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(after=cursor), metadata=ALICE_BARE)
        assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR", "after")


async def test_registry_list_metadata_filter(jobs: Stub) -> None:
    a = await jobs.CreateFineTuningJob(create_request(metadata={"team": "a", "env": "prod"}), metadata=ALICE)
    b = await jobs.CreateFineTuningJob(create_request(metadata={"team": "b", "env": "prod"}), metadata=ALICE)
    bare = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)

    async def ids(request: ft.ListFineTuningJobsRequest) -> list[str]:
        return [job.id for job in (await jobs.ListFineTuningJobs(request, metadata=ALICE_BARE)).data]

    assert await ids(ft.ListFineTuningJobsRequest()) == [bare.id, b.id, a.id]
    assert await ids(ft.ListFineTuningJobsRequest(metadata=ft.Metadata(values={"env": "prod"}))) == [
        b.id,
        a.id,
    ]
    both = ft.Metadata(values={"env": "prod", "team": "a"})
    assert await ids(ft.ListFineTuningJobsRequest(metadata=both)) == [a.id]
    assert await ids(ft.ListFineTuningJobsRequest(metadata=ft.Metadata())) == [bare.id]


async def test_provider_list_keeps_its_token_server_side(jobs: Stub, provider: FakeProvider) -> None:
    ours = [(await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)).id for _ in range(2)]
    provider.now += 10
    provider.jobs["ftjob-foreign"] = {
        **next(iter(provider.jobs.values())),
        "id": "ftjob-foreign",
        "metadata": {},
    }
    page = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(limit=2), metadata=ALICE)
    assert [job.id for job in page.data] == ["ftjob-foreign", ours[1]] and page.has_more
    page2 = await jobs.ListFineTuningJobs(
        ft.ListFineTuningJobsRequest(limit=2, after=ours[1]), metadata=ALICE
    )
    assert [job.id for job in page2.data] == [ours[0]] and not page2.has_more
    assert provider.ops("list_jobs")[-1] == ("list_jobs", 2, "2")
    for md in (ALICE, BOB):  # a cursor is the owner's and the account's
        with pytest.raises(grpc.aio.AioRpcError) as info:
            request = ft.ListFineTuningJobsRequest(after="ftjob-foreign" if md is ALICE else ours[1])
            await jobs.ListFineTuningJobs(request, metadata=md)
        assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR", "after")


async def test_provider_list_filters_by_the_metadata_callers_see(jobs: Stub, provider: FakeProvider) -> None:
    prod = (await jobs.CreateFineTuningJob(create_request(metadata={"env": "prod"}), metadata=ALICE)).id
    bare = (await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)).id
    foreign = {**provider.jobs[native_of(provider, bare)], "id": "ftjob-foreign", "metadata": {"env": "prod"}}
    provider.jobs["ftjob-foreign"] = foreign

    async def ids(wanted: ft.Metadata) -> list[str]:
        page = await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(metadata=wanted), metadata=ALICE)
        return [job.id for job in page.data]

    # Registry jobs match on the caller's metadata (not the provider copy's tag), others on theirs.
    assert await ids(ft.Metadata(values={"env": "prod"})) == ["ftjob-foreign", prod]
    assert await ids(ft.Metadata()) == [bare]


async def test_provider_paging_by_id_keeps_no_cursor_row(
    jobs: Stub, provider: FakeProvider, gateway: GatewayServer
) -> None:
    provider.pages_by_id = True  # like OpenAI, Azure and local: `after` is the last job's id
    ours = [(await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)).id for _ in range(2)]
    native = native_of(provider, ours[1])
    provider.jobs["ftjob-foreign"] = {
        **next(iter(provider.jobs.values())),
        "id": "ftjob-foreign",
        "metadata": {},
    }
    provider.jobs["ftjob-foreign2"] = {**provider.jobs["ftjob-foreign"], "id": "ftjob-foreign2"}
    seen: list[str] = []
    after = ""
    while True:
        page = await jobs.ListFineTuningJobs(
            ft.ListFineTuningJobsRequest(limit=1, after=after), metadata=ALICE
        )
        seen += [job.id for job in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == ["ftjob-foreign2", "ftjob-foreign", ours[1], ours[0]]
    # A gateway id is mapped to its native id; a foreign id is the provider's own.
    tokens = [call[2] for call in provider.ops("list_jobs")]
    assert tokens == [None, "ftjob-foreign2", "ftjob-foreign", native]
    async with gateway.database.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM provider_cursors"))).scalar() == 0
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the provider's own answer to an unknown id
        await jobs.ListFineTuningJobs(ft.ListFineTuningJobsRequest(after="ftjob-nobody"), metadata=ALICE)
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR", "after")


async def test_events_are_mirrored_with_stable_cursors(jobs: Stub, provider: FakeProvider) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)
    native = native_of(provider, job.id)
    for i in range(5):
        provider.add_event(native, f"event {i}", level="warning" if i == 2 else "info")

    async def page(
        after: str = "", limit: int = 2, md: Metadata = ALICE_BARE
    ) -> ft.ListFineTuningEventsResponse:
        request = ft.ListFineTuningEventsRequest(fine_tuning_job_id=job.id, after=after, limit=limit)
        return await jobs.ListFineTuningEvents(request, metadata=md)

    first = await page()
    assert [e.message for e in first.data] == ["event 4", "event 3"] and first.has_more
    assert all(e.id.startswith("ftevent-") and len(e.id) == 32 for e in first.data)
    for i in range(5, 8):  # new events arrive between pages
        provider.add_event(native, f"event {i}")
    second = await page(after=first.data[-1].id)
    assert [e.message for e in second.data] == ["event 2", "event 1"]
    assert second.data[0].level == ft.EVENT_LEVEL_WARN
    third = await page(after=second.data[-1].id)
    assert [e.message for e in third.data] == ["event 0"] and not third.has_more
    newest = await page(limit=20)
    assert [e.message for e in newest.data] == [f"event {i}" for i in range(7, -1, -1)]
    assert newest.data[-1].id == third.data[0].id  # ids are stable
    # Without a credential, what is mirrored is served.
    provider.add_event(native, "event 8")
    offline = await page(limit=20, md=ALICE_TENANT)
    assert offline.data[0].message == "event 7"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await page(after="ftevent-unknown")
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CURSOR", "after")


async def test_checkpoints_are_mirrored_under_gateway_ids(jobs: Stub, provider: FakeProvider) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=TEAM)
    native = native_of(provider, job.id)
    for step in (10, 20, 30):
        provider.add_checkpoint(native, step)
    request = ft.ListFineTuningCheckpointsRequest(fine_tuning_job_id=job.id)
    listed = await jobs.ListFineTuningCheckpoints(request)
    assert [c.step_number for c in listed.data] == [30, 20, 10] and not listed.has_more
    assert all(c.id.startswith("ftckpt_") and c.fine_tuning_job_id == job.id for c in listed.data)
    assert (listed.first_id, listed.last_id) == (listed.data[0].id, listed.data[-1].id)
    assert listed.data[0].metrics.train_loss == pytest.approx(1 / 30)
    provider.add_checkpoint(native, 40)
    again = await jobs.ListFineTuningCheckpoints(
        ft.ListFineTuningCheckpointsRequest(fine_tuning_job_id=job.id, limit=2)
    )
    assert [c.step_number for c in again.data] == [40, 30] and again.has_more
    assert again.data[1].id == listed.data[0].id


async def test_events_on_a_provider_without_them_are_unsupported(jobs: Stub, provider: FakeProvider) -> None:
    job = await jobs.CreateFineTuningJob(create_request(), metadata=ALICE)
    provider.capabilities = frozenset(Capability) - {Capability.EVENTS, Capability.STAGED_FILES}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await jobs.ListFineTuningEvents(
            ft.ListFineTuningEventsRequest(fine_tuning_job_id=job.id), metadata=ALICE
        )
    assert error_of(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_BY_PROVIDER", None)
