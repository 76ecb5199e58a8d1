"""Gateway files at providers: each file is copied to a provider account once, on first use,
streamed from the blob store, and the provider's file id is remembered per (file, account).

An adapter with `Capability.STAGED_FILES` (Bedrock) stages a file per job instead: converted to
what the job's model reads, once per (file, `staging_key`), through `stage_file`.

Azure imports files asynchronously (`uploaded` until `processed`); a job can only be created from
a `processed` file, so `native_file_id(wait=True)` polls the provider with exponential backoff,
bounded by `ready_timeout`. A provider-side `error` forgets the copy (the next use copies again)
and answers 400 with the provider's details.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from tunegate.server.errors import DeadlineExceeded, InvalidArgument, NotFound, log_failure
from tunegate.server.files import Clock, FileService
from tunegate.server.ids import FILE_PREFIX, is_well_formed
from tunegate.server.jobs._backends import Backend, ProviderLookup
from tunegate.server.providers.interface import Account, Capability, StagingProvider
from tunegate.server.store import FileRecord, FileRepository, ProviderFileRecord, ProviderFileRepository

__all__ = ["FileCopySettings", "ProviderFileCopier"]

logger = logging.getLogger("tunegate.server")

PROCESSED, ERROR = "processed", "error"
COPY_CHUNK_SIZE = 1024 * 1024
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FileCopySettings:
    """`ready_timeout`: how long a create waits for the provider to process a copied file;
    polling starts at `poll_interval` seconds and doubles up to `max_poll_interval`."""

    ready_timeout: float = 600.0
    poll_interval: float = 1.0
    max_poll_interval: float = 15.0

    def __post_init__(self) -> None:
        if self.ready_timeout < 0 or self.poll_interval <= 0 or self.max_poll_interval < self.poll_interval:
            raise ValueError("invalid file copy settings")


def file_not_found(file_id: str, param: str) -> InvalidArgument:
    return InvalidArgument(f"No such File object: {file_id}", code="file_not_found", param=param)


class ProviderFileCopier:
    """Copies gateway files to provider accounts and remembers the copies."""

    def __init__(
        self,
        files: FileService,
        file_rows: FileRepository,
        repository: ProviderFileRepository,
        providers: ProviderLookup,
        *,
        settings: FileCopySettings | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._files = files
        self._file_rows = file_rows
        self._repo = repository
        self._providers = providers
        self._settings = settings or FileCopySettings()
        self._clock = clock
        self._sleep = sleep
        # Single flight per (file, account) within this process, so concurrent jobs on a new
        # account upload a file once. Across processes the table's primary key keeps the first.
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def check_file(
        self, owner: str, file_id: str, backend: Backend, *, param: str
    ) -> FileRecord | None:
        """Classify a create request's file id before any provider cost: the owner's gateway
        file (which must be visible and have purpose `fine-tune`), or None for a provider-native
        id that passes through unchanged.

        A provider's ids may look exactly like ours (OpenAI's `file-` + 24 alphanumerics). A
        well-formed id the gateway issued to another owner (or this owner's deleted or expired
        one) is `file_not_found`; one it never issued is asked of the provider (`get_file`, no
        cost) and is `file_not_found` unless the provider has it. Other ids pass unchecked."""
        if not is_well_formed(file_id, FILE_PREFIX):
            return None
        try:
            record = await self._files.get(owner, file_id)
        except NotFound:
            if await self._file_rows.exists_anywhere(file_id):
                raise file_not_found(file_id, param) from None
            if backend.can(Capability.FILES):
                try:
                    await backend.provider.get_file(backend.account, file_id)
                except NotFound:
                    raise file_not_found(file_id, param) from None
            return None
        if record.purpose != "fine-tune":
            raise InvalidArgument(
                f"File {file_id} has purpose '{record.purpose}'; fine-tuning needs purpose 'fine-tune'.",
                code="invalid_file_purpose",
                param=param,
            )
        return record

    async def is_gateway_file(self, owner: str, file_id: str) -> bool:
        """Whether `file_id` is (or was) one of this owner's gateway files."""
        return is_well_formed(file_id, FILE_PREFIX) and await self._file_rows.get(owner, file_id) is not None

    async def known_native_id(self, file_id: str, account_key: str) -> str | None:
        """The provider id of an existing copy, without copying."""
        record = await self._repo.get(file_id, account_key)
        return None if record is None else record.native_id

    async def native_file_id(
        self,
        owner: str,
        file_id: str,
        backend: Backend,
        *,
        param: str,
        wait: bool,
        request: Mapping[str, Any] | None = None,
    ) -> str:
        """The provider's id for a gateway file on `backend`'s account, copying it on first use;
        with `wait`, only once the provider reports it `processed`. `request` (the create body)
        is what a staging adapter stages for (`Capability.STAGED_FILES`)."""
        record = await self._copy(owner, file_id, backend, param, request)
        if wait:
            record = await self._await_processed(record, backend, param)
        return record.native_id

    async def copy_to_provider(self, owner: str, file_id: str, account: Account) -> str:
        """Copy a gateway file to `account` now (without waiting for processing); returns the
        provider's file id. Used when an upload itself names a provider."""
        backend = Backend(self._providers.get(account.provider), account)
        return await self.native_file_id(owner, file_id, backend, param="file", wait=False)

    def schedule_copy(self, owner: str, file_id: str, account: Account) -> bool:
        """`copy_to_provider` in the background: failures are logged, never raised. The task is
        referenced until done (so it is not garbage-collected) and cancelled by `aclose`.
        Returns False (and copies nothing) for an adapter that stages files per job instead."""
        backend = Backend(self._providers.get(account.provider), account)
        if not backend.can(Capability.FILES):
            return False
        task = asyncio.create_task(self._copy_logged(owner, file_id, account), name=f"copy-{file_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def aclose(self) -> None:
        """Cancel background copies and wait for them to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _copy_logged(self, owner: str, file_id: str, account: Account) -> None:
        try:
            native = await self.copy_to_provider(owner, file_id, account)
        except Exception as exc:
            log_failure(logger, exc, f"background copy of {file_id} to {account.key}")
        else:
            logger.info("copied %s to %s as %s", file_id, account.key, native)

    async def _copy(
        self, owner: str, file_id: str, backend: Backend, param: str, request: Mapping[str, Any] | None
    ) -> ProviderFileRecord:
        account = backend.account
        stager: StagingProvider | None = None
        copy_key = account.key
        if backend.can(Capability.STAGED_FILES):
            if request is None:
                raise ValueError("a staging adapter stages files for a create request")
            stager = cast(StagingProvider, backend.provider)
            copy_key = stager.staging_key(account, request)
        key = (file_id, copy_key)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            existing = await self._repo.get(file_id, copy_key)
            if existing is not None:
                return existing
            if stager is None:
                backend.require(Capability.FILES, "file uploads")
            try:
                content = await self._files.open_content(owner, file_id, chunk_size=COPY_CHUNK_SIZE)
            except NotFound:
                raise file_not_found(file_id, param) from None
            if stager is not None:
                assert request is not None
                uploaded = await stager.stage_file(
                    account,
                    request,
                    file_id=file_id,
                    filename=content.record.filename,
                    size=content.record.bytes,
                    chunks=content.chunks,
                    param=param,
                )
            else:
                uploaded = await backend.provider.upload_file(
                    account,
                    filename=content.record.filename,
                    purpose=content.record.purpose,
                    size=content.record.bytes,
                    chunks=content.chunks,
                )
            return await self._repo.put(
                ProviderFileRecord(
                    file_id=file_id,
                    account_key=copy_key,
                    provider=account.provider,
                    native_id=uploaded.id,
                    status=uploaded.status,
                    status_details=uploaded.status_details,
                    created_at=int(self._clock()),
                )
            )

    async def _await_processed(
        self, record: ProviderFileRecord, backend: Backend, param: str
    ) -> ProviderFileRecord:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.ready_timeout
        delay = self._settings.poll_interval
        while record.status != PROCESSED:
            if record.status == ERROR:
                await self._repo.delete(record.file_id, record.account_key)
                details = record.status_details or "no details given"
                raise InvalidArgument(
                    f"{backend.provider.name} could not process file {record.file_id}: {details}",
                    code="invalid_file",
                    param=param,
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"{backend.provider.name} is still processing file {record.file_id}; "
                    "retry the request later.",
                    code="file_not_ready",
                )
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, self._settings.max_poll_interval)
            current = await backend.provider.get_file(backend.account, record.native_id)
            if (current.status, current.status_details) != (record.status, record.status_details):
                await self._repo.set_status(
                    record.file_id, record.account_key, current.status, current.status_details
                )
                record = replace(record, status=current.status, status_details=current.status_details)
        return record
