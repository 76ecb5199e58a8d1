"""Relaying a provider's chat answer: its body as it arrives, aligned to whole server-sent events.

`ResponseChunks` iterates a streamed `httpx.Response` and is what `ChatReply.chunks` holds:

- `text/event-stream`: each item is one or more *whole* events — the bytes up to and including
  the last event terminator received so far (a blank line: `\\n\\n`, `\\r\\n\\r\\n` or `\\r\\r`);
  a partial event waits for the rest. Bytes are relayed unchanged (never parsed or re-rendered);
  what is left when the provider ends its body is relayed as the last item;
- any other content type: the body's chunks as received;
- a broken connection or a read timeout raises the `HttpClient`'s error (`UpstreamError`,
  `DeadlineExceeded`); `aclose()` (also when the iteration was never started) closes the
  response, which closes its connection and so cancels the provider's work.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import cast

import httpx
from tunegate.server.providers._http import HttpClient

__all__ = ["PASSED_HEADERS", "ResponseChunks", "passed_headers"]

PASSED_HEADERS = frozenset(
    {"x-request-id", "apim-request-id", "openai-processing-ms", "openai-version", "openai-model"}
)
"""Response headers of a chat answer worth passing back (beside every `x-ratelimit-*`)."""
_TERMINATORS = (b"\n\n", b"\r\r", b"\r\n\r\n")


def passed_headers(headers: httpx.Headers) -> Mapping[str, str]:
    """The request id, processing time and rate-limit headers of an answer, lower-case names."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in PASSED_HEADERS or lower.startswith("x-ratelimit-"):
            out[lower] = value
    return out


class ResponseChunks:
    """An async iterator of a streamed response's body (see the module docstring). Iterate it
    once; `aclose()` it when done (`contextlib.aclosing`)."""

    __slots__ = ("_body", "_buffer", "_closed", "_events", "_http", "_response")

    def __init__(self, http: HttpClient, response: httpx.Response) -> None:
        self._http = http
        self._response = response
        content_type = response.headers.get("content-type", "")
        self._events = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        self._body = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        self._buffer = b""
        self._closed = False

    def __aiter__(self) -> ResponseChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            while True:
                try:
                    chunk = await self._body.__anext__()
                except StopAsyncIteration:
                    rest, self._buffer = self._buffer, b""
                    await self.aclose()
                    if rest:
                        return rest
                    raise
                if not self._events:
                    if chunk:
                        return chunk
                    continue
                searched = len(self._buffer)
                data = self._buffer + chunk if self._buffer else chunk
                cut = _last_event_end(data, max(0, searched - 3))
                if cut == 0:
                    self._buffer = data
                    continue
                self._buffer = data[cut:]
                return data if cut == len(data) else data[:cut]
        except httpx.RequestError as exc:
            await self.aclose()
            raise self._http._transport_error(exc) from exc
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stops reading and closes the response (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._body.aclose()
        finally:
            await self._response.aclose()


def _last_event_end(data: bytes, start: int) -> int:
    """The offset just past the last event terminator in `data[start:]`, or 0 when none."""
    end = 0
    for terminator in _TERMINATORS:
        at = data.rfind(terminator, start)
        if at >= 0:
            end = max(end, at + len(terminator))
    return end
