"""Result files: a provider job's `result_files` become gateway files of the job's owner.

A provider that declares `RESULT_FILES` lets the registry read a result file back
(`Provider.download_file`). The first refresh that sees a native result id imports it — streamed
into the blob store, registered as a file with purpose `fine-tune-results` under the job's owner
— and records the mapping in `provider_files` (gateway file id ↔ native id on the account), so
every later refresh only looks the mapping up. The caller then sees gateway ids in
`result_files` and downloads them with `GET /v1/files/{id}/content` like any other file.

Once per native id: concurrent refreshes in this process are serialised per (account, native
id). A failed import is logged and the id is left out of `result_files` for now; the next
refresh tries again. Providers without `RESULT_FILES` keep their native ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence

from tunegate.server.files import Clock, FileService
from tunegate.server.jobs._backends import Backend
from tunegate.server.providers.interface import Capability
from tunegate.server.store import JobRecord, ProviderFileRecord, ProviderFileRepository

__all__ = ["ResultFileImporter"]

logger = logging.getLogger("tunegate.server")

RESULTS_PURPOSE = "fine-tune-results"


class ResultFileImporter:
    """Maps a job's native result file ids to gateway file ids, importing each once."""

    def __init__(
        self, files: FileService, repository: ProviderFileRepository, *, clock: Clock = time.time
    ) -> None:
        self._files = files
        self._repo = repository
        self._clock = clock
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def gateway_ids(
        self, record: JobRecord, backend: Backend | None, native_ids: Sequence[str]
    ) -> list[str]:
        """The gateway ids of `native_ids` (importing new ones); ids that cannot be mapped now
        are left out. Without `RESULT_FILES` (or a backend) the native ids are returned as is."""
        if not native_ids:
            return []
        if backend is None or not backend.can(Capability.RESULT_FILES):
            return list(native_ids)
        result: list[str] = []
        for native in native_ids:
            file_id = await self._import(record, backend, native)
            if file_id is not None:
                result.append(file_id)
        return result

    async def _import(self, record: JobRecord, backend: Backend, native: str) -> str | None:
        key = (record.account_key, native)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            existing = await self._repo.by_native_id(record.account_key, native)
            if existing is not None:
                return existing.file_id
            try:
                download = await backend.provider.download_file(backend.account, native)
                stored = await self._files.import_file(
                    record.owner,
                    download.chunks,
                    filename=download.filename,
                    purpose=RESULTS_PURPOSE,
                    content_type=download.content_type,
                )
            except Exception:
                logger.exception("could not import result file %s of job %s", native, record.id)
                return None
            await self._repo.put(
                ProviderFileRecord(
                    file_id=stored.id,
                    account_key=record.account_key,
                    provider=record.provider,
                    native_id=native,
                    status="processed",
                    created_at=int(self._clock()),
                )
            )
            logger.info("imported result file %s of %s as %s", native, record.id, stored.id)
            return stored.id
