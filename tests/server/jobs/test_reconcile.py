"""The crash window and the reconciler, against the JobService over a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tunegate.openai_json import to_openai
from tunegate.server import GatewayServer, ServerConfig
from tunegate.server.errors import UpstreamError
from tunegate.server.jobs import (
    FAULT_CRASH_AFTER_PROVIDER_CREATE,
    JobService,
    ReconcileReport,
    _create,
    request_hash,
)
from tunegate.server.jobs._render import job_message
from tunegate.server.owner import owner_from_metadata
from tunegate.server.store import Database
from tunegate.v1 import fine_tuning_pb2 as ft

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
    shown = to_openai(job_message(row))
    assert (shown["id"], shown["status"], shown["metadata"]) == (job_id, "validating_files", {"a": "b"})

    service = restart(gateway, provider, router, clock)
    assert await service.reconcile() == ReconcileReport()  # still within the grace period
    clock.advance(31)
    assert await service.reconcile() == ReconcileReport(completed=1)
    assert await service.reconcile() == ReconcileReport()

    job = to_openai(await service.retrieve(owner, job_id, metadata={}))
    assert (job["id"], job["metadata"], job["object"]) == (job_id, {"a": "b"}, "fine_tuning.job")
    [row] = await gateway.database.jobs.page(owner, limit=10)
    assert (row.state, row.native_id) == ("created", next(iter(provider.jobs)))
    # The client's retry with the same key gets the same job; the provider still has one.
    again = await service.create(owner, BODY, metadata=dict(TEAM), request_id="key-1")
    assert again.id == job_id
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
    assert [job.status for job in page.data] == [ft.JOB_STATUS_VALIDATING_FILES]
    job = await service.retrieve(owner, job_id, metadata=dict(ALICE))
    assert job.id == job_id and job.status == ft.JOB_STATUS_VALIDATING_FILES
    [row] = await gateway.database.jobs.page(owner, limit=10)
    assert row.state == "created" and len(provider.jobs) == 1


@pytest.mark.usefixtures("crash")
async def test_a_provider_down_at_restart_is_one_warning_per_intent_without_a_traceback(
    gateway: GatewayServer,
    provider: FakeProvider,
    router: StubRouter,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = await crash_create(gateway, TEAM, monkeypatch)

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise UpstreamError("The connection to the 'openai' provider failed (ConnectError).")

    monkeypatch.setattr(provider, "find_job_by_tag", down)
    clock.advance(31)
    caplog.clear()
    with caplog.at_level("DEBUG", logger="tunegate"):
        for _ in range(2):  # two restarts
            assert await restart(gateway, provider, router, clock).reconcile() == ReconcileReport(pending=1)
    records = [r for r in caplog.records if r.name.startswith("tunegate")]
    assert [r.exc_info for r in records if r.exc_info] == []
    warnings = [r.getMessage() for r in records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all(job_id in w and "\n" not in w for w in warnings)


async def test_an_intent_never_found_is_given_up(
    gateway: GatewayServer, provider: FakeProvider, clock: FakeClock
) -> None:
    provider.create_error = UpstreamError("gateway timeout")
    owner = owner_from_metadata(TEAM)
    intent = await gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k")
    assert intent.status == ft.JOB_STATUS_VALIDATING_FILES
    clock.advance(60)
    assert await gateway.jobs.reconcile() == ReconcileReport(pending=1)
    clock.advance(900)
    assert await gateway.jobs.reconcile() == ReconcileReport(failed=1)
    [row] = await gateway.database.jobs.page(owner, limit=10)
    job = await gateway.jobs.retrieve(owner, row.id, metadata={})
    assert job.status == ft.JOB_STATUS_FAILED
    assert job.error.code == "creation_not_confirmed"
    assert provider.jobs == {}


# -- the completion before the answer ---------------------------------------------------------


async def test_the_created_record_is_committed_before_the_answer(
    gateway: GatewayServer, provider: FakeProvider
) -> None:
    owner = owner_from_metadata(TEAM)
    seen_at_create: list[tuple[str, bool]] = []
    original = provider.create_job

    async def create_job(account: Any, request: Any, *, tag: str) -> Any:
        record = await other.jobs.get_any(tag)  # the intent, committed: another instance sees it
        assert record is not None
        seen_at_create.append((record.state, record.attempted))
        return await original(account, request, tag=tag)

    other = await Database.open(gateway.config.resolved_database_url)  # another instance
    try:
        provider.create_job = create_job  # type: ignore[method-assign]
        job = await gateway.jobs.create(owner, BODY, metadata=dict(TEAM))
        assert seen_at_create == [("intent", True)]
        row = await other.jobs.get(owner, job.id)
        assert row is not None
        assert (row.state, row.native_id, row.lease_until) == ("created", next(iter(provider.jobs)), None)
        assert row.snapshot is not None and job_message(row) == job
    finally:
        await other.close()


async def test_a_completion_that_cannot_be_stored_leaves_the_intent_for_the_reconciler(
    gateway: GatewayServer,
    provider: FakeProvider,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refused(*_args: Any, **_kwargs: Any) -> bool:
        raise RuntimeError("disk full")

    monkeypatch.setattr(gateway.database.jobs, "complete", refused)
    owner = owner_from_metadata(TEAM)
    with pytest.raises(RuntimeError, match="disk full"):
        await gateway.jobs.create(owner, BODY, metadata=dict(TEAM))
    [row] = await gateway.database.jobs.page(owner, limit=10)
    assert (row.state, row.attempted, row.lease_until) == ("intent", True, None)  # tagged, free

    monkeypatch.undo()
    clock.advance(31)
    assert await gateway.jobs.reconcile() == ReconcileReport(completed=1)
    completed = await gateway.database.jobs.get(owner, row.id)
    assert completed is not None and completed.state == "created" and len(provider.jobs) == 1


async def test_a_retry_after_a_completion_that_could_not_be_stored_finds_the_job(
    gateway: GatewayServer, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(*_args: Any, **_kwargs: Any) -> bool:
        raise RuntimeError("disk full")

    monkeypatch.setattr(gateway.database.jobs, "complete", refused)
    owner = owner_from_metadata(TEAM)
    with pytest.raises(RuntimeError):
        await gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k")
    monkeypatch.undo()
    job = await gateway.jobs.create(owner, BODY, metadata=dict(TEAM), request_id="k")
    [row] = await gateway.database.jobs.page(owner, limit=10)
    assert (row.id, row.state) == (job.id, "created")
    assert provider.ops("find_job_by_tag") == [("find_job_by_tag", job.id)]  # looked before creating
    assert len(provider.ops("create_job")) == 1 and len(provider.jobs) == 1


# -- intents left by the previous release's intent journal ----------------------------------


def legacy_line(job_id: str, owner: str, *, created_at: int, metadata: dict[str, str] | None) -> bytes:
    """One line as the previous release appended it to `<database>-intents.0` / `.1`: the row
    (every column but `seq`, JSON columns as JSON text) and its metadata pairs."""
    row = {
        "id": job_id,
        "owner": owner,
        "provider": "openai",
        "account_key": "vk:team",
        "region": None,
        "native_id": None,
        "state": "intent",
        "status": "validating_files",
        "request": json.dumps(BODY, sort_keys=True),
        "request_hash": request_hash(BODY, "vk:team"),
        "request_id": None,
        "metadata": None if metadata is None else json.dumps(metadata, sort_keys=True),
        "snapshot": None,
        "error": None,
        "attempted": True,
        "lease_until": created_at + 900,
        "created_at": created_at,
        "updated_at": created_at,
    }
    pairs = [{"job_id": job_id, "key": k, "value": v} for k, v in (metadata or {}).items()]
    return json.dumps({"row": row, "metadata": pairs}).encode() + b"\n"


def write_files(base: Path, contents: dict[str, bytes]) -> list[str]:
    """Write `<base><suffix>` files; returns the suffixes of the `-intents*` files there now."""
    for suffix, data in contents.items():
        Path(f"{base}{suffix}").write_bytes(data)
    return sorted(path.name.removeprefix(base.name) for path in base.parent.glob(f"{base.name}-intents*"))


async def test_intents_left_in_the_previous_releases_intent_files_are_imported_and_reconciled(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider, router: StubRouter
) -> None:
    config = ServerConfig(data_dir=tmp_path / "data", port=0, grace_seconds=0.5, monitor_enabled=False)

    async def start() -> GatewayServer:
        return await GatewayServer.start(
            config, clock=clock, providers=FakeProviders(provider), router=router, job_settings=job_settings()
        )

    owner = owner_from_metadata(TEAM)
    gateway = await start()
    stored = await gateway.jobs.create(owner, BODY, metadata=dict(TEAM))
    await gateway.stop(0)
    # The previous release died with two intents on record only as lines, their jobs tagged at
    # the provider, and a stale line whose row had been stored (and completed) since.
    now = int(clock())
    account = router.account_for("vk:team")
    assert account is not None
    lost = ["ftjob-" + "a" * 24, "ftjob-" + "b" * 24]
    for job_id in lost:
        await provider.create_job(account, {"model": BODY["model"], "training_file": "t"}, tag=job_id)
    base = tmp_path / "data" / "tunegate.db"
    left = {
        "-intents.0": legacy_line(lost[0], owner, created_at=now, metadata={"k": "v"})
        + b"not json\n"
        + legacy_line(stored.id, owner, created_at=now, metadata={"a": "b"}),
        "-intents.1": legacy_line(lost[1], owner, created_at=now, metadata=None)
        + b'{"row": {"id": "ftjob-torn',  # the process died mid-append
        "-intents.lock": b"",
    }
    assert write_files(base, left) == sorted(left)

    gateway = await start()
    try:
        assert write_files(base, {}) == []  # imported, then removed
        imported = [await gateway.database.jobs.get(owner, job_id) for job_id in lost]
        assert [(r.state, r.attempted, r.metadata) for r in imported if r is not None] == [
            ("intent", True, {"k": "v"}),
            ("intent", True, None),
        ]
        kept = await gateway.database.jobs.get(owner, stored.id)
        assert kept is not None and kept.state == "created"  # the stale line changed nothing
        page = await gateway.database.jobs.page(owner, limit=10, metadata={"k": "v"})
        assert [r.id for r in page] == [lost[0]]  # its metadata pairs came with it

        clock.advance(31)
        assert await gateway.jobs.reconcile() == ReconcileReport(completed=2)
        for job_id in lost:
            job = await gateway.jobs.retrieve(owner, job_id, metadata={})
            assert isinstance(job, ft.FineTuningJob) and job.id == job_id
        rows = await gateway.database.jobs.page(owner, limit=10)
        assert {r.state for r in rows} == {"created"} and len(rows) == 3
        assert len(provider.jobs) == 3 and len(provider.ops("create_job")) == 3
    finally:
        await gateway.stop(0)
