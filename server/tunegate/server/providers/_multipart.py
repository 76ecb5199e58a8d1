"""A streaming `multipart/form-data` body: form fields, then one file, never buffered whole.

Sans-IO: `MultipartFile` computes the exact `Content-Length` up front (the preamble and epilogue
are small and known; the file's size is declared by the caller) and yields the file's chunks as
they come, so memory stays flat however large the file is. httpx sends it as is
(`content=body.stream()`, with the headers from `body.headers()`).

Invariant: the stream yields exactly `content_length` bytes or raises. A file source that ends
short or runs long is a bug upstream of the adapter (the blob store's size disagrees with its
record), so it raises `Internal` instead of sending a body the provider would misread.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping

from tunegate.server.errors import Internal

__all__ = ["MultipartFile"]


def _quote(value: str) -> bytes:
    # The HTML5 form encoding, as browsers and httpx send it: UTF-8, with `"`, CR and LF
    # percent-escaped so a file name can never end the header or the parameter early.
    escaped = value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.encode()


class MultipartFile:
    """The body of a form with text `fields` (in order) followed by one file part named
    `file_field`, whose `size` bytes arrive from `chunks`. Iterate `stream()` once."""

    def __init__(
        self,
        *,
        fields: Mapping[str, str],
        file_field: str,
        filename: str,
        size: int,
        chunks: AsyncIterator[bytes],
        content_type: str = "application/octet-stream",
        boundary: str | None = None,
    ) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.boundary = boundary or secrets.token_hex(16)
        self.size = size
        self._chunks = chunks
        head = bytearray()
        for name, value in fields.items():
            head += b"--" + self.boundary.encode() + b"\r\n"
            head += b'Content-Disposition: form-data; name="' + _quote(name) + b'"\r\n\r\n'
            head += value.encode() + b"\r\n"
        head += b"--" + self.boundary.encode() + b"\r\n"
        head += b'Content-Disposition: form-data; name="' + _quote(file_field) + b'"; '
        head += b'filename="' + _quote(filename) + b'"\r\n'
        head += b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
        self._head = bytes(head)
        self._tail = b"\r\n--" + self.boundary.encode() + b"--\r\n"

    @property
    def content_length(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(self.content_length),
        }

    async def stream(self) -> AsyncIterator[bytes]:
        """Yields the body lazily: the preamble, each file chunk as it arrives, the epilogue."""
        yield self._head
        sent = 0
        async for chunk in self._chunks:
            if not chunk:
                continue
            sent += len(chunk)
            if sent > self.size:
                raise Internal(f"The file has more than its declared {self.size} bytes.")
            yield chunk
        if sent != self.size:
            raise Internal(f"The file ended after {sent} of its declared {self.size} bytes.")
        yield self._tail
