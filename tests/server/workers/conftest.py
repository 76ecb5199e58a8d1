"""Fixtures for the queue tests: a fresh PostgreSQL database per test (procrastinate's tables
and queues must not leak jobs between tests) and a stand-in for the local provider's runner."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.server.conftest import _pg_admin
from tests.server.workers.standin import StandInRunner


@pytest.fixture
def queue_db() -> Iterator[str]:
    """`postgresql+asyncpg://…` of a database made for this test, dropped after it."""
    name = "tunegate_queue_" + secrets.token_hex(6)
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def runner() -> AsyncIterator[StandInRunner]:
    yield StandInRunner()
