"""Every scripted `Upstream` server a test started is stopped after it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .support import close_upstreams


@pytest.fixture(autouse=True)
async def _stop_upstreams() -> AsyncIterator[None]:
    yield
    await close_upstreams()
