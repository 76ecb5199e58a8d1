"""The crash window and the reconciler, against the JobService over a real database."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from tunegate.server import GatewayServer
from tunegate.server.errors import UpstreamError
from tunegate.server.jobs import FAULT_CRASH_AFTER_PROVIDER_CREATE, JobService, ReconcileReport, _create
from tunegate.server.jobs._service import render
from tunegate.server.owner import owner_from_metadata

from tests.server.conftest import FakeClock
from tests.server.jobs.conftest import job_settings
from tests.server.jobs.fakes import FakeProvider, FakeProviders, StubRouter
from tests.server.jobs.support import ALICE, TEAM
from tests.server.support import Metadata

BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "training_file": "file-native-training",
    "metadata": {"a": "b"},
}


class SimulatedCrash(BaseException):
    """Stands in for `os._exit`: unwinds without running the commit."""


def restart(
    gateway: GatewayServer, provider: FakeProvider, router: StubRouter, clock: FakeClock
) -> JobService:
    """A fresh service over the same database, as after a process restart."""
    return JobService(
        gateway.database, gateway.files, router, FakeProviders(provider), settings=job_settings(), clock=clock
    )


@pytest.fixture
def crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def exit_(status: int) -> None:
        assert status == 70
        raise SimulatedCrash

    monkeypatch.setattr(_create, "_exit", exit_)
    monkeypatch.setenv(FAULT_CRASH_AFTER_PROVIDER_CREATE, "1")


async def crash_create(gateway: GatewayServer, md: Metadata, monkeypatch: pytest.MonkeyPatch) -> str:
    owner = owner_from_metadata(md)
    with pytest.raises(SimulatedCrash):
        await gateway.jobs.create(owner, BODY, metadata=dict(md), request_id="key-1")
    monkeypatch.delenv(FAULT_CRASH_AFTER_PROVIDER_CREATE)
    [row] = await gateway.database.jobs.page(owner, limit=10)
    assert (row.state, row.attempted) == ("intent", True)
    return row.id


@pytest.mark.usefixtures("crash")
async def test_a_crash_after_the_provider_answered_is_reconciled_once(
    gateway: GatewayServer,
    provider: FakeProvider,
    router: StubRouter,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = await crash_create(gateway, TEAM, monkeypatch)
    assert len(provider.jobs) == 1
    owner = owner_from_metadata(TEAM)
    # Until it is resolved, the intent renders as a job being validated.
    row = await gateway.database.jobs.get(owner, job_id)
    assert row is not None
    shown = render(row)
    assert (shown["id"], shown["status"], shown["metadata"]) == (job_id, "validating_files", {"a": "b"})

    service = restart(gateway, provider, router, clock)
    assert await service.reconcile() == ReconcileReport()  # still within the grace period
    clock.advance(31)
    assert await service.reconcile() == ReconcileReport(completed=1)
    assert await service.reconcile() == ReconcileReport()

    job = await service.retrieve(owner, job_id, metadata={})
    assert (job["id"], job["metadata"], job["object"]) == (job_id, {"a": "b"}, "fine_tuning.job")
    [row] = await gateway.database.jobs.page(owner, limit=10)
    assert (row.state, row.native_id) == ("created", next(iter(provider.jobs)))
    # The client's retry with the same key gets the same job; the provider still has one.
    again = await service.create(owner, BODY, metadata=dict(TEAM), request_id="key-1")
    assert again["id"] == job_id
    assert len(provider.ops("create_job")) == 1 and len(provider.jobs) == 1


@pytest.mark.usefixtures("crash")
async def test_per_request_credentials_are_resolved_by_the_next_call_carrying_them(
    gateway: GatewayServer,
    provider: FakeProvider,
    router: StubRouter,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = await crash_create(gateway, ALICE, monkeypatch)
    owner = owner_from_metadata(ALICE)
    service = restart(gateway, provider, router, clock)
    clock.advance(31)
    assert await service.reconcile() == ReconcileReport(pending=1)  # no stored credential
    page = await service.list(owner, metadata={"x-portkey-api-key": "pk-alice"})
    assert [job["status"] for job in page.data] == ["validating_files"]
    job = await service.retrieve(owner, job_id, metadata=dict(ALICE))
    assert job["id"] == job_id and job["status"] == "validating_files"
    [row] = await gateway.database.jobs.page(owner, limit=10)
    assert row.state == "created" and len(provider.jobs) == 1


async def test_an_intent_never_found_is_given_up(
    gateway: GatewayServer, provider: FakeProvider, clock: FakeClock
) -> None:
    provider.create_error = UpstreamError("gateway timeout")
    owner = owner_from_metadata(TEAM)
    with pytest.raises(UpstreamError):
        await gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k")
    clock.advance(60)
    assert await gateway.jobs.reconcile() == ReconcileReport(pending=1)
    clock.advance(900)
    assert await gateway.jobs.reconcile() == ReconcileReport(failed=1)
    [row] = await gateway.database.jobs.page(owner, limit=10)
    job = await gateway.jobs.retrieve(owner, row.id, metadata={})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "creation_not_confirmed"
    assert provider.jobs == {}


# -- the completion after the answer ----------------------------------------------------------


def hold_completions(gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Make every batch of completions stored after the answers (`complete_many`) wait for the
    returned event (on a database this process alone serves; skips the test on PostgreSQL,
    whose answer waits for the store)."""
    if not gateway.database.jobs.inline:
        pytest.skip("on a shared database the completion is stored before the answer")
    release = asyncio.Event()
    original = gateway.database.jobs.complete_many

    async def complete_many(*args: Any, **kwargs: Any) -> int:
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(gateway.database.jobs, "complete_many", complete_many)
    return release


async def test_the_answer_does_not_wait_for_the_completion_and_calls_meanwhile_do(
    gateway: GatewayServer, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = hold_completions(gateway, monkeypatch)
    owner = owner_from_metadata(TEAM)
    job = await asyncio.wait_for(gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k"), 5)
    row = await gateway.database.jobs.get(owner, job["id"])
    assert row is not None and (row.state, row.attempted) == ("intent", True)  # tagged, attempted

    retrieved = asyncio.create_task(gateway.jobs.retrieve(owner, job["id"], metadata=dict(TEAM)))
    replayed = asyncio.create_task(gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k"))
    listed = asyncio.create_task(gateway.jobs.list(owner, metadata={}))
    await asyncio.sleep(0.1)
    assert not (retrieved.done() or replayed.done() or listed.done())  # each waits for the store
    release.set()
    assert (await retrieved)["id"] == (await replayed)["id"] == job["id"]
    assert [listed_job["id"] for listed_job in (await listed).data] == [job["id"]]
    assert provider.ops("find_job_by_tag") == []  # nobody looked for a job this process holds
    assert len(provider.ops("create_job")) == 1
    row = await gateway.database.jobs.get(owner, job["id"])
    assert row is not None and (row.state, row.native_id) == ("created", next(iter(provider.jobs)))


async def test_on_a_shared_database_the_answer_waits_for_the_completion(
    gateway: GatewayServer, provider: FakeProvider
) -> None:
    owner = owner_from_metadata(TEAM)
    job = await gateway.jobs.create(owner, BODY, metadata=dict(TEAM))
    row = await gateway.database.jobs.get(owner, job["id"])
    assert row is not None
    # Another instance asked next must see the job complete; this process alone may wait.
    assert row.state == ("intent" if gateway.database.jobs.inline else "created")


async def test_a_completion_that_cannot_be_stored_leaves_the_intent_for_the_reconciler(
    gateway: GatewayServer,
    provider: FakeProvider,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not gateway.database.jobs.inline:
        pytest.skip("on a shared database the store is part of the answer")

    async def refused(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("disk full")

    original = gateway.database.jobs.complete_many
    monkeypatch.setattr(gateway.database.jobs, "complete_many", refused)
    owner = owner_from_metadata(TEAM)
    job = await gateway.jobs.create(owner, BODY, metadata=dict(TEAM))
    await gateway.jobs.creator.settle()
    assert "they stay intents" in caplog.text
    row = await gateway.database.jobs.get(owner, job["id"])
    assert row is not None and (row.state, row.attempted) == ("intent", True)

    monkeypatch.setattr(gateway.database.jobs, "complete_many", original)
    clock.advance(31)
    assert await gateway.jobs.reconcile() == ReconcileReport(completed=1)
    row = await gateway.database.jobs.get(owner, job["id"])
    assert row is not None and row.state == "created" and len(provider.jobs) == 1


async def test_closing_the_service_stores_the_completions_in_flight(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = hold_completions(gateway, monkeypatch)
    owner = owner_from_metadata(TEAM)
    job = await gateway.jobs.create(owner, BODY, metadata=dict(TEAM))
    closing = asyncio.create_task(gateway.jobs.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await closing
    row = await gateway.database.jobs.get(owner, job["id"])
    assert row is not None and row.state == "created"


# -- completions stored in batches ------------------------------------------------------------


def count_batches(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> list[list[str]]:
    """Set the creator's batching `settings`; returns the job ids of each `complete_many` call
    (skips the test on PostgreSQL, whose creates store their completion before answering)."""
    if not gateway.database.jobs.inline:
        pytest.skip("on a shared database each completion is stored before its answer")
    creator = gateway.jobs.creator
    monkeypatch.setattr(creator, "settings", dataclasses.replace(creator.settings, **settings))
    batches: list[list[str]] = []
    original = gateway.database.jobs.complete_many

    async def complete_many(completions: Any) -> int:
        batches.append([c.job_id for c in completions])
        return await original(completions)

    monkeypatch.setattr(gateway.database.jobs, "complete_many", complete_many)
    return batches


async def states(gateway: GatewayServer, owner: str, ids: list[str]) -> list[str]:
    rows = [await gateway.database.jobs.get(owner, job_id) for job_id in ids]
    return [row.state if row is not None else "missing" for row in rows]


async def test_creates_answered_together_are_completed_in_one_batch_after_the_delay(
    gateway: GatewayServer, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = count_batches(gateway, monkeypatch, completion_delay=0.2)
    owner = owner_from_metadata(TEAM)
    ids = [(await gateway.jobs.create(owner, BODY, metadata=dict(TEAM)))["id"] for _ in range(3)]
    assert batches == [] and await states(gateway, owner, ids) == ["intent"] * 3
    await asyncio.sleep(0.4)  # no call asked for them: the timer stores them
    assert batches == [ids]
    assert await states(gateway, owner, ids) == ["created"] * 3
    rows = [await gateway.database.jobs.get(owner, job_id) for job_id in ids]
    assert sorted(str(row.native_id) for row in rows if row is not None) == sorted(provider.jobs)


async def test_a_full_batch_is_stored_at_once(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = count_batches(gateway, monkeypatch, completion_delay=3600.0, completion_batch=2)
    owner = owner_from_metadata(TEAM)
    ids = [(await gateway.jobs.create(owner, BODY, metadata=dict(TEAM)))["id"] for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert batches == [ids[:2]]
    assert await states(gateway, owner, ids) == ["created", "created", "intent"]
    await gateway.jobs.creator.settle()
    assert batches == [ids[:2], ids[2:]]


async def test_a_call_meeting_a_waiting_completion_has_its_batch_stored_at_once(
    gateway: GatewayServer, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = count_batches(gateway, monkeypatch, completion_delay=3600.0)
    owner = owner_from_metadata(TEAM)
    first = (await gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k"))["id"]
    retrieved = await asyncio.wait_for(gateway.jobs.retrieve(owner, first, metadata=dict(TEAM)), 5)
    assert retrieved["id"] == first and retrieved["fine_tuned_model"] is None
    assert batches == [[first]]
    second = (await gateway.jobs.create(owner, BODY, metadata=dict(TEAM)))["id"]
    listed = await asyncio.wait_for(gateway.jobs.list(owner, metadata={}), 5)  # the registry
    assert [job["id"] for job in listed.data] == [second, first]
    replayed = await asyncio.wait_for(
        gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k"), 5
    )
    assert replayed["id"] == first
    assert batches == [[first], [second]]
    assert await states(gateway, owner, [first, second]) == ["created", "created"]
    assert provider.ops("find_job_by_tag") == [] and len(provider.ops("create_job")) == 2
