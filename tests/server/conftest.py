"""Fixtures for the gRPC server tests: a real `GatewayServer` on 127.0.0.1:0 over SQLite or
PostgreSQL, an injectable clock, and async stubs on a channel made inside the test's loop."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from tunegate.server import GatewayServer, ServerConfig
from tunegate.v1 import files_pb2_grpc, fine_tuning_pb2_grpc, uploads_pb2_grpc

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class FakeClock:
    """A settable clock (Unix seconds) for `GatewayServer.start(clock=...)`."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _pg_admin(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A fresh, randomly named PostgreSQL database (skips the test when PostgreSQL is
    unreachable); yields its `postgresql+asyncpg://` URL and drops it afterwards."""
    name = prefix + secrets.token_hex(6)
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (dropped at the end)."""
    yield from fresh_postgres_database("tunegate_test_")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


StartGateway = Callable[..., Awaitable[GatewayServer]]


@pytest.fixture
async def start_gateway(tmp_path: Path, clock: FakeClock) -> AsyncIterator[StartGateway]:
    """Start gateways with small limits (overridable); all are stopped at teardown."""
    started: list[GatewayServer] = []

    async def start(*, database_url: str | None = None, **overrides: Any) -> GatewayServer:
        settings: dict[str, Any] = {
            "data_dir": tmp_path / f"data{len(started)}",
            "port": 0,
            "database_url": database_url,
            "max_file_bytes": 256 * 1024,
            "max_part_bytes": 64 * 1024,
            "max_upload_bytes": 1024 * 1024,
            "grace_seconds": 0.5,
            "monitor_enabled": False,  # the fake clock stands still; the monitor has its own tests
        }
        settings.update(overrides)
        gateway = await GatewayServer.start(ServerConfig(**settings), clock=clock)
        started.append(gateway)
        if database_url is not None:  # the PostgreSQL database is shared by the session
            async with gateway.database.engine.begin() as conn:
                await conn.execute(sa.text("TRUNCATE files, upload_parts, uploads"))
        return gateway

    yield start
    for gateway in started:
        await gateway.stop(0)


@pytest.fixture
async def gateway(start_gateway: StartGateway, database_url: str | None) -> GatewayServer:
    return await start_gateway(database_url=database_url)


@pytest.fixture
async def sqlite_gateway(start_gateway: StartGateway) -> GatewayServer:
    return await start_gateway()


async def _channel(gateway: GatewayServer) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(gateway.address)


@pytest.fixture
async def channel(gateway: GatewayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gateway.address) as ch:
        yield ch


@pytest.fixture
async def sqlite_channel(sqlite_gateway: GatewayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sqlite_gateway.address) as ch:
        yield ch


@pytest.fixture
def files(channel: grpc.aio.Channel) -> files_pb2_grpc.FilesAsyncStub:
    return files_pb2_grpc.FilesStub(channel)


@pytest.fixture
def uploads(sqlite_channel: grpc.aio.Channel) -> uploads_pb2_grpc.UploadsAsyncStub:
    return uploads_pb2_grpc.UploadsStub(sqlite_channel)


@pytest.fixture
def upload_files(sqlite_channel: grpc.aio.Channel) -> files_pb2_grpc.FilesAsyncStub:
    """Files stub on the same server as `uploads`."""
    return files_pb2_grpc.FilesStub(sqlite_channel)


@pytest.fixture
def fine_tuning(sqlite_channel: grpc.aio.Channel) -> fine_tuning_pb2_grpc.FineTuningAsyncStub:
    return fine_tuning_pb2_grpc.FineTuningStub(sqlite_channel)
