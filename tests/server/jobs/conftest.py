"""Fixtures for the job registry tests: a real `GatewayServer` on 127.0.0.1:0 (SQLite and
PostgreSQL) wired to an in-memory provider and a stub router, and stubs over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
import pytest
import sqlalchemy as sa
from tunegate.server import GatewayServer, ServerConfig
from tunegate.server.jobs import CreationSettings, FileCopySettings, JobSettings
from tunegate.server.providers.interface import Capability
from tunegate.v1 import files_pb2_grpc, fine_tuning_pb2_grpc

from tests.server.conftest import FakeClock
from tests.server.jobs.fakes import FakeProvider, FakeProviders, StubRouter

TABLES = (
    "job_metadata, job_events, job_checkpoints, job_polls, provider_files, provider_cursors, jobs, "
    "files, upload_parts, uploads"
)


def job_settings() -> JobSettings:
    return JobSettings(
        creation=CreationSettings(wait=10.0, poll_interval=0.01, reconcile_grace=30.0, abandon_after=900.0),
        files=FileCopySettings(ready_timeout=2.0, poll_interval=0.01, max_poll_interval=0.02),
    )


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider("openai")


@pytest.fixture
def azure() -> FakeProvider:
    no_pause = frozenset(Capability) - {Capability.PAUSE, Capability.RESUME, Capability.STAGED_FILES}
    return FakeProvider("azure-openai", no_pause)


@pytest.fixture
def router() -> StubRouter:
    return StubRouter({"team": "openai", "azure-team": "azure-openai"})


@pytest.fixture
async def gateway(
    tmp_path: Path,
    clock: FakeClock,
    database_url: str | None,
    provider: FakeProvider,
    azure: FakeProvider,
    router: StubRouter,
) -> AsyncIterator[GatewayServer]:
    config = ServerConfig(
        data_dir=tmp_path / "data",
        port=0,
        database_url=database_url,
        grace_seconds=0.5,
        monitor_enabled=False,  # these tests count provider calls; the monitor has its own tests
    )
    server = await GatewayServer.start(
        config,
        clock=clock,
        providers=FakeProviders(provider, azure),
        router=router,
        job_settings=job_settings(),
    )
    if database_url is not None:  # the PostgreSQL database is shared by the session
        async with server.database.engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {TABLES}"))
    yield server
    await server.stop(0)


@pytest.fixture
async def channel(gateway: GatewayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gateway.address) as ch:
        yield ch


@pytest.fixture
def jobs(channel: grpc.aio.Channel) -> fine_tuning_pb2_grpc.FineTuningAsyncStub:
    return fine_tuning_pb2_grpc.FineTuningStub(channel)


@pytest.fixture
def files(channel: grpc.aio.Channel) -> files_pb2_grpc.FilesAsyncStub:
    return files_pb2_grpc.FilesStub(channel)
