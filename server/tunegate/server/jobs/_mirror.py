"""Mirrored events and checkpoints: provider items kept under gateway ids, paged with stable
cursors.

On each list call the provider's newest pages are read until an already mirrored native id
appears (at most `max_pages` pages); the new items are appended oldest first, so the registry's
`seq` follows the provider's chronology, then the page is served from the registry newest first
with `after=<gateway id>`. New items arriving between calls only ever get larger `seq`s, so a
cursor taken earlier still continues exactly where it left off. When the provider cannot be
reached for lack of credentials, what is mirrored is served.

Limit: for a job with more than `max_pages × page_size` items on its first sync, the oldest ones
are never mirrored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tunegate.server.errors import InvalidArgument
from tunegate.server.ids import new_id
from tunegate.server.jobs._backends import Backend
from tunegate.server.providers.interface import Page
from tunegate.server.store import JobRecord, MirroredRecord, MirrorRepository

__all__ = ["Mirror", "MirrorPage", "checkpoints_lister", "events_lister"]

MAX_LIMIT = 100
Lister = Callable[[Backend], Callable[..., Awaitable[Page]]]


@dataclass(frozen=True, slots=True)
class MirrorPage:
    """One page of mirrored items, newest first (`has_more` is exact)."""

    data: list[MirroredRecord]
    has_more: bool


def _native_id(item: dict[str, Any]) -> str:
    native = item.get("id")
    if native:
        return str(native)
    # An item without an id is identified by its content (it cannot change once emitted).
    return "sha256:" + hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()


class Mirror:
    """One kind of mirrored item (events or checkpoints) over its repository."""

    def __init__(
        self,
        repository: MirrorRepository,
        *,
        prefix: str,
        lister: Lister,
        max_pages: int = 10,
        page_size: int = 100,
    ) -> None:
        self._repo = repository
        self._prefix = prefix
        self._lister = lister
        self._max_pages = max_pages
        self._page_size = page_size

    async def sync(self, record: JobRecord, backend: Backend) -> int:
        """Mirror the provider's items newer than the newest mirrored one; returns how many."""
        if record.native_id is None:
            return 0
        list_page = self._lister(backend)
        fresh: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(self._max_pages):
            page = await list_page(backend.account, record.native_id, limit=self._page_size, page_token=token)
            ids = [_native_id(item) for item in page.data]
            known = await self._repo.known(record.id, ids)
            reached_known = False
            for item, native in zip(page.data, ids, strict=True):
                if native in known:
                    reached_known = True
                    break
                fresh.append(item)
            if reached_known or not page.has_more or not page.data:
                break
            token = page.next_token or ids[-1]
        rows = [
            MirroredRecord(
                id=new_id(self._prefix),
                job_id=record.id,
                native_id=_native_id(item),
                created_at=int(item.get("created_at") or 0),
                body=item,
            )
            for item in reversed(fresh)  # oldest first: seq follows the provider's chronology
        ]
        await self._repo.insert(rows)
        return len(rows)

    async def page(self, record: JobRecord, *, after: str | None, limit: int) -> MirrorPage:
        """Up to `limit` items newest first, older than the item `after` (a gateway id)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidArgument(
                f"limit must be between 1 and {MAX_LIMIT}.", code="invalid_value", param="limit"
            )
        after_seq = await self.position(record, after) if after else None
        rows = await self._repo.page(record.id, limit=limit + 1, after_seq=after_seq)
        return MirrorPage(data=rows[:limit], has_more=len(rows) > limit)

    async def position(self, record: JobRecord, item_id: str) -> int:
        """Where the item `item_id` (a gateway id of this job's) stands in the mirror: a cursor
        for `newer`. Raises InvalidArgument (`invalid_cursor`, param `after`) for another id."""
        cursor = await self._repo.get(record.id, item_id)
        if cursor is None or cursor.seq is None:
            raise InvalidArgument(
                f"Invalid cursor {item_id!r}: not an id from this job's list.",
                code="invalid_cursor",
                param="after",
            )
        return cursor.seq

    async def newer(self, record: JobRecord, *, after: int | None, limit: int) -> list[MirroredRecord]:
        """Up to `limit` items oldest first, mirrored after position `after` (all when None);
        the last one's `seq` is the position to continue from."""
        return await self._repo.since(record.id, limit=limit, after_seq=after)


def events_lister(backend: Backend) -> Callable[..., Awaitable[Page]]:
    return backend.provider.list_events


def checkpoints_lister(backend: Backend) -> Callable[..., Awaitable[Page]]:
    return backend.provider.list_checkpoints
