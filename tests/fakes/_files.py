"""File storage shared by the fakes: multipart intake (streamed to disk, bytes counted) and records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import BodyPartReader, web

from tests.fakes._common import ApiError

__all__ = ["StoredFile", "Upload", "receive_multipart"]

_CHUNK = 256 * 1024


@dataclass
class StoredFile:
    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path
    status: str = "processed"
    status_details: str | None = None
    expires_at: int | None = None


@dataclass
class Upload:
    """A multipart ``file`` + form fields, as received."""

    fields: dict[str, str]
    filename: str | None
    path: Path | None
    size: int


async def receive_multipart(request: web.Request, destination: Path, *, allowed: frozenset[str]) -> Upload:
    """Read a ``multipart/form-data`` body: text fields into a dict, the ``file`` part streamed to
    ``destination`` in 256 KiB chunks. Fields outside ``allowed`` (``CreateFileRequest`` has
    ``additionalProperties: false``), repeated fields and a non-multipart body are violations."""
    if request.content_type != "multipart/form-data":
        raise ApiError(400, f"Expected multipart/form-data, got {request.content_type!r}.", violation=True)
    reader = await request.multipart()
    fields: dict[str, str] = {}
    filename: str | None = None
    path: Path | None = None
    size = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "Nested multipart bodies are not supported.", violation=True)
        name = part.name or ""
        if name not in allowed:
            raise ApiError(400, f"Unrecognized request argument supplied: {name}", param=name, violation=True)
        if name in fields or (name == "file" and path is not None):
            raise ApiError(400, f"Duplicate form field: {name}", param=name, violation=True)
        if name == "file":
            filename = part.filename
            path = destination
            with destination.open("wb") as out:
                while chunk := await part.read_chunk(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
        else:
            fields[name] = await part.text()
    return Upload(fields, filename, path, size)
