"""Fixtures for the queue tests: a fresh PostgreSQL database per test (procrastinate's tables
and queues must not leak jobs between tests) and a stand-in for the local provider's runner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.conftest import fresh_postgres_database
from tests.server.workers.standin import StandInRunner


@pytest.fixture
def queue_db() -> Iterator[str]:
    """`postgresql+asyncpg://…` of a database made for this test, dropped after it."""
    yield from fresh_postgres_database("tunegate_queue_")


@pytest.fixture
def runner() -> StandInRunner:
    return StandInRunner()
