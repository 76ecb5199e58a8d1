"""A streaming ``multipart/form-data`` reader (RFC 7578 over RFC 2046's multipart syntax).

Theory of operation
-------------------

The body is read with ``StreamReader.readany()``: each step takes the bytes the connection
delivered, as the object it delivered them in. ``FormReader.next_part()`` finds the next
delimiter (``CRLF--boundary``; the body is read as if it began with a CRLF, so a first
delimiter at the very start counts and a preamble is skipped), then the part's headers (at most
``MAX_HEADER_BYTES``). ``read_chunk()`` hands out the part's bytes up to its closing delimiter.

A delimiter can only begin at a ``CR``: a received block with no delimiter in it is handed out
whole — the same object, no copy — unless a ``CR`` within its last ``len(delimiter) - 1`` bytes
could begin one; then the block is cut at that ``CR`` and the held bytes are searched again
together with the start of the next block only (never the whole next block). aiohttp's own part
reader joins each block to the one before it to search the pair, which copies every byte of a
large part twice more; this reader was written for that (a 1 GiB upload, see ``bench/``).

Errors in the syntax (no boundary, a body that ends inside a part, headers too long or
malformed, bytes after a delimiter that are neither ``--`` nor a line end) raise ``FormError``,
a ``ValueError``. Content-Disposition is parsed with aiohttp's public helpers; header bytes are
decoded as UTF-8 with lone surrogates for undecodable bytes, as aiohttp does, so a caller can
refuse a filename that is not UTF-8.
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass
from typing import Protocol

from aiohttp.multipart import content_disposition_filename, parse_content_disposition
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["Body", "FormError", "FormPart", "FormReader", "boundary_of"]

MAX_HEADER_BYTES = 16 * 1024
"""Cap on one part's header block."""
MIN_CHUNK = 128
"""The least ``read_chunk()`` hands out when more is there (a delimiter is at most 76 bytes)."""
_CRLF = b"\r\n"


class Body(Protocol):
    """Where the bytes come from: aiohttp's ``StreamReader`` (``request.content``)."""

    async def readany(self) -> bytes: ...


class FormError(ValueError):
    """The body is not well-formed ``multipart/form-data``."""


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a ``multipart/*`` Content-Type (RFC 2046: 1–70 characters)."""
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise FormError("the Content-Type needs a boundary of 1 to 70 characters")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise FormError("the boundary must be ASCII") from None


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part's headers; its bytes come from ``FormReader.read_chunk()``."""

    headers: CIMultiDictProxy[str]
    name: str | None
    filename: str | None

    def get_charset(self, default: str) -> str:
        header = email.message.Message()
        header["Content-Type"] = self.headers.get("Content-Type", "text/plain")
        charset = header.get_content_charset()
        return charset or default


class FormReader:
    """Parts one at a time; each part's bytes as they arrive. Not safe for concurrent use."""

    def __init__(self, content: Body, boundary: bytes) -> None:
        self._content = content
        self._delimiter = _CRLF + b"--" + boundary
        self._held = _CRLF  # received, not yet handed out or consumed
        self._in_part = True  # the preamble is read (and dropped) like a part's bytes
        self._ended = False

    async def next_part(self) -> FormPart | None:
        """The next part's headers, or None after the closing delimiter."""
        while self._in_part:
            await self.read_chunk(1 << 30)  # whatever the caller left of the current part
        if self._ended:
            return None
        await self._need(len(self._delimiter) + 2)  # `_held` starts with the delimiter
        if self._held[len(self._delimiter) : len(self._delimiter) + 2] == b"--":
            self._ended = True
            self._held = b""
            return None
        self._held = self._held[len(self._delimiter) :]
        while not (held := self._held.lstrip(b" \t")):  # RFC 2046 transport padding
            self._held = await self._read()
        self._held = held
        await self._need(2)
        if not self._held.startswith(_CRLF):
            raise FormError("a delimiter must end its line")
        part = self._part(await self._header_block())
        self._in_part = True
        return part

    async def read_chunk(self, size: int) -> bytes:
        """At most ``size`` (raised to ``MIN_CHUNK``) of the current part's bytes; b"" at its end."""
        if not self._in_part:
            return b""
        size = max(size, MIN_CHUNK)
        delimiter = self._delimiter
        while True:
            held = self._held
            if held:
                at = held.find(delimiter)
                if at == 0:
                    self._in_part = False
                    return b""
                if at > 0:
                    return self._hand_out(min(at, size))
                cut = held.find(b"\r", max(0, len(held) - len(delimiter) + 1))
                if cut != 0:  # nothing before `cut` (or in all of `held`) begins a delimiter
                    return self._hand_out(min(len(held) if cut < 0 else cut, size))
            block = await self._read()
            if len(held) + len(block) < 2 * len(delimiter):
                self._held = held + block  # small: join them and search again
                continue
            # All of `held` (shorter than a delimiter) may begin one: every delimiter that begins
            # in it ends within the block's first len(delimiter) bytes.
            at = (held + block[: len(delimiter)]).find(delimiter)
            if 0 <= at < len(held):
                self._held = held[at:] + block  # the part ends here: one copy per part
                if at:
                    return held[:at]
                continue
            self._held = block
            if held:
                return held

    def _hand_out(self, count: int) -> bytes:
        held = self._held
        if count == len(held):
            self._held = b""
            return held
        self._held = held[count:]
        return held[:count]

    async def _read(self) -> bytes:
        block = await self._content.readany()
        if not block:
            raise FormError("the body ended before the closing delimiter")
        return block

    async def _need(self, count: int) -> None:
        while len(self._held) < count:
            self._held += await self._read()

    async def _header_block(self) -> bytes:
        """The header lines after a delimiter line (which starts ``_held``), consumed."""
        while True:
            end = self._held.find(_CRLF + _CRLF, 0, MAX_HEADER_BYTES + 4)
            if end >= 0:
                block, self._held = self._held[2:end], self._held[end + 4 :]
                return block
            if len(self._held) >= MAX_HEADER_BYTES + 4:
                raise FormError(f"a part's headers are longer than {MAX_HEADER_BYTES} bytes")
            self._held += await self._read()

    @staticmethod
    def _part(block: bytes) -> FormPart:
        fields: list[list[str]] = []
        for raw in block.split(_CRLF) if block else ():
            line = raw.decode("utf-8", "surrogateescape")
            if line[:1] in (" ", "\t") and fields:  # an obsolete folded continuation line
                fields[-1][1] += " " + line.strip(" \t")
                continue
            field, colon, value = line.partition(":")
            if not colon or not field or field != field.strip(" \t"):
                raise FormError(f"malformed part header {raw[:80]!r}")
            fields.append([field, value.strip(" \t")])
        headers: CIMultiDict[str] = CIMultiDict((field, value) for field, value in fields)
        name = filename = None
        disposition = headers.get("Content-Disposition")
        if disposition is not None:
            _, params = parse_content_disposition(disposition)
            name = params.get("name")
            filename = content_disposition_filename(params, "filename")
        return FormPart(CIMultiDictProxy(headers), name, filename)
