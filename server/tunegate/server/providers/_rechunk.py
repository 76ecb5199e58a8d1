"""Cutting an async byte stream into pieces of a fixed size, as uploads in parts (S3 multipart,
GCS resumable chunks) need them, without copying the stream's chunks on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["Rechunker"]


class Rechunker:
    """Reads `chunks` (of any sizes) and hands out views of them, `size` bytes' worth at a time."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = memoryview(b"")
        self.done = False
        """True once the source is exhausted."""

    async def take(self, size: int) -> AsyncIterator[memoryview]:
        """Views totalling exactly `size` bytes (fewer only at the end of the stream), in order.
        An exception of the source propagates as it is."""
        filled = 0
        while filled < size:
            if not self._rest:
                if self.done:
                    return
                try:
                    chunk = await anext(self._chunks)
                except StopAsyncIteration:
                    self.done = True
                    return
                self._rest = memoryview(chunk)
            piece = self._rest[: size - filled]
            self._rest = self._rest[len(piece) :]
            filled += len(piece)
            yield piece
