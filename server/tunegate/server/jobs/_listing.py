"""Listing jobs, newest first: the registry's across providers, or one provider account's.

A call naming no provider pages through the registry (`after` = a gateway job id; jobs whose
creation failed are hidden). A call naming a provider lists that account's jobs at the provider:
registry jobs under their gateway ids (their snapshots refreshed on the way), others — made at
the provider directly — under their native ids. The client only ever pages with `after=<id>`:
a provider paging by id gets the native id behind it; any other provider's opaque page token
stays here, keyed by the page's last id and kept `cursor_ttl` seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from tunegate.server.errors import InvalidArgument
from tunegate.server.files import Clock
from tunegate.server.ids import is_well_formed
from tunegate.server.jobs._backends import AccountRouter, Backend, Backends, ProviderLookup
from tunegate.server.jobs._create import FAILED_TO_CREATE, INTENT, JOB_PREFIX, JobCreator
from tunegate.server.jobs._render import job_list
from tunegate.server.providers.interface import Account, Capability, JobObject
from tunegate.server.store import JobRecord, JobRepository
from tunegate.v1 import fine_tuning_pb2 as ft

__all__ = ["JobLister", "Refresh"]

Refresh = Callable[[JobRecord, JobObject, Backend | None], Awaitable[JobRecord]]
"""Stores a provider's latest job in its registry record; returns the updated record."""


class JobLister:
    """Pages of jobs for `JobService.list` (see the module docstring)."""

    def __init__(
        self,
        repository: JobRepository,
        router: AccountRouter,
        providers: ProviderLookup,
        backends: Backends,
        creator: JobCreator,
        refresh: Refresh,
        *,
        cursor_ttl: int,
        clock: Clock,
    ) -> None:
        self._repo = repository
        self._router = router
        self._providers = providers
        self._backends = backends
        self._creator = creator
        self._refresh = refresh
        self._cursor_ttl = cursor_ttl
        self._clock = clock

    async def list(
        self,
        owner: str,
        *,
        metadata: Mapping[str, str],
        after: str | None,
        limit: int,
        metadata_filter: Mapping[str, str] | None,
    ) -> ft.ListFineTuningJobsResponse:
        """Up to `limit` jobs after the job `after`. `metadata_filter` (already checked): None =
        all; empty = jobs without metadata; else jobs holding every pair."""
        account = self._router.resolve(metadata)
        if account is not None:
            return await self._list_provider(
                owner, account, after=after, limit=limit, metadata_filter=metadata_filter
            )
        if after and not is_well_formed(after, JOB_PREFIX):
            raise _invalid_cursor(after)
        rows = await self._repo.page(
            owner,
            limit=limit + 1,
            after=after or None,
            metadata=metadata_filter,
            hidden_states=(FAILED_TO_CREATE,),
        )
        # The page's statement reads the cursor too; only an empty page asks whether it exists.
        if after and not rows and await self._repo.get(owner, after) is None:
            raise _invalid_cursor(after)
        data: list[JobRecord | JobObject] = []
        for record in rows[:limit]:
            # A tag lookup is read-only, so it is safe beside a live driver — and a lease left
            # by a crashed process must not hide a job the provider already has.
            if record.state == INTENT and record.attempted:
                record = await self._creator.resolve(record, self._backends.for_job(record, metadata))
            data.append(record)
        return job_list(data, has_more=len(rows) > limit)

    async def _list_provider(
        self,
        owner: str,
        account: Account,
        *,
        after: str | None,
        limit: int,
        metadata_filter: Mapping[str, str] | None,
    ) -> ft.ListFineTuningJobsResponse:
        backend = Backend(self._providers.get(account.provider), account)
        backend.require(Capability.LIST, "listing jobs")
        by_id = backend.provider.pages_by_id
        now = int(self._clock())
        token: str | None = None
        if after:
            if by_id:
                token = await self._native_cursor(owner, account, after)
            else:
                token = await self._repo.get_cursor(
                    owner, account.key, after, not_before=now - self._cursor_ttl
                )
            if token is None:
                raise InvalidArgument(
                    f"Invalid cursor {after!r}: not the last id of a page listed here (or expired).",
                    code="invalid_cursor",
                    param="after",
                )
        page = await backend.provider.list_jobs(account, limit=limit, page_token=token)
        native_ids = [str(job.get("id")) for job in page.data]
        known = await self._repo.by_native_ids(owner, account.key, native_ids)
        data: list[JobRecord | JobObject] = []
        last_id = ""  # the id the caller sees for the last job shown
        for job, native_id in zip(page.data, native_ids, strict=True):
            record = known.get(native_id)
            if record is None:  # a job made at the provider directly: its own ids and metadata
                if _matches(job.get("metadata"), metadata_filter):
                    data.append(job)
                    last_id = native_id
            else:
                record = await self._refresh(record, job, backend)
                if _matches(record.metadata, metadata_filter):
                    data.append(record)
                    last_id = record.id
        if page.has_more and data and not by_id:
            next_token = page.next_token or native_ids[-1]
            await self._repo.put_cursor(
                owner, account.key, last_id, next_token, now=now, expire_before=now - self._cursor_ttl
            )
        return job_list(data, has_more=page.has_more)

    async def _native_cursor(self, owner: str, account: Account, after: str) -> str | None:
        """For a provider that pages by id: the native id to list after. A registry job's gateway
        id maps to its native id (on this account only); any other id is the provider's own —
        with a metadata filter, the page may end before the provider's page did: listing after
        the last job shown re-reads the skipped ones, which the filter skips again."""
        record = await self._repo.get(owner, after) if is_well_formed(after, JOB_PREFIX) else None
        if record is None:
            return after
        return record.native_id if record.account_key == account.key else None


def _invalid_cursor(after: str) -> InvalidArgument:
    return InvalidArgument(
        f"Invalid cursor {after!r}: not the id of one of your jobs.", code="invalid_cursor", param="after"
    )


def _matches(metadata: Mapping[str, str] | None, wanted: Mapping[str, str] | None) -> bool:
    if wanted is None:
        return True
    if not wanted:
        return not metadata
    return all((metadata or {}).get(key) == value for key, value in wanted.items())
