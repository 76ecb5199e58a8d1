"""The provider adapters' HTTP/1.1 transport: keep-alive connection pools per origin over asyncio
transports, answers parsed by llhttp (`httptools`), TLS by the standard `ssl` module.

Why not aiohttp's or httpx's client: against the benchmark's loopback fake upstream aiohttp's
`ClientSession` spends ~110 µs of CPU on a small GET and httpx more; this spends ~25-35 µs
(`bench/RESULTS.md`). Every proxied call makes one such request, so the client was the
gateway's largest single cost. It does what provider APIs need and nothing else:

- a body of bytes (sent with `Content-Length`) or an async iterator of byte chunks (sent as they
  come: with the caller's `Content-Length`, which must then be exact, else chunked); the
  transport's flow control is honoured, so a large upload holds one chunk at a time;
- answers delimited by `Content-Length`, chunked, or the end of the connection, their bodies
  read whole; `gzip` / `deflate` content encodings decoded (none is asked for: the client sends
  no `Accept-Encoding`); informational (1xx) answers skipped;
- redirects are never followed: the caller sees the 3xx;
- a connection is reused only after a complete exchange that both sides keep alive, most
  recently used first; an idle connection is dropped once the peer closes it or after
  `keepalive_seconds`; a call that fails or is cancelled closes its connection (its state is
  unknown);
- at most `max_connections` exchanges at once; a call waits for a free one at most
  `read_timeout` seconds;
- timeouts: connecting, TLS included (`connect_timeout`); any wait for the peer — to accept
  more of the request or to send more of the answer — longer than `read_timeout` fails the call.

Answers are `ProviderResponse`s (status, case-insensitive headers, decoded body). Failures raise
`ConnectTimeout`, `ReadTimeout` or `ConnectionFailed` (all `TransportError`). A
header name or value with a line break, or a body that disagrees with its `Content-Length`,
raises `ValueError` before or instead of sending it whole.
"""

from __future__ import annotations

import asyncio
import functools
import http
import ssl
import urllib.parse
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson
from multidict import CIMultiDict

__all__ = [
    "ConnectTimeout",
    "ConnectionFailed",
    "Http1Pool",
    "ProviderResponse",
    "ReadTimeout",
    "TransportError",
]


class TransportError(Exception):
    """The exchange failed below HTTP: nothing usable was answered."""


class ConnectTimeout(TransportError):
    """No connection (TCP and TLS) within the connect timeout; nothing reached the peer."""


class ReadTimeout(TransportError):
    """The peer stopped reading the request or sending the answer for longer than the timeout."""


class ConnectionFailed(TransportError):
    """The connection could not be made, broke, or carried something that is not HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """A provider's answer, body read. `headers` is case-insensitive."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def reason_phrase(self) -> str:
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not JSON."""
        return orjson.loads(self.content)


_Origin = tuple[str, str, int]  # scheme, host, port
_USER_AGENT = "User-Agent: tunegate"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time (`exchange`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._answer: asyncio.Future[ProviderResponse] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._active_at = 0.0
        self._head = False
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._ends_with_eof = False
        self._keep_alive = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # nothing asked: a peer talking out of turn is not reusable
            self.close()
            return
        self._active_at = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionFailed(f"The provider's answer is not valid HTTP/1.1 ({exc})."))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the answer was

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is not None and not answer.done():
            if self._ends_with_eof and self._status:
                self._keep_alive = False
                self._complete()
            else:
                self._fail(ConnectionFailed("The connection closed before the answer was complete."))
        self._wake_writer(ConnectionFailed("The connection closed while the request was sent."))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._active_at = self._loop.time()
        self._wake_writer(None)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._status < 200:
            return
        names = {name.lower() for name, _ in self._headers}
        self._ends_with_eof = (
            "content-length" not in names
            and "transfer-encoding" not in names
            and self._status not in (204, 304)
            and not self._head
        )
        if self._head:  # no body follows, whatever the headers say; do not reuse to be safe
            self._keep_alive = False
            self._complete()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 100 Continue and friends: the real answer follows
            self._status = 0
            self._headers = []
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- the exchange --------------------------------------------------------------------------

    async def exchange(
        self, head: bytes, body: bytes | AsyncIterator[bytes] | None, length: int | None, is_head: bool
    ) -> ProviderResponse:
        """Send one request (`head` is its request line and headers) and await the answer."""
        transport = self._transport
        if transport is None or self.closed:
            raise ConnectionFailed("The connection closed before the request was sent.")
        answer: asyncio.Future[ProviderResponse] = self._loop.create_future()
        self._answer = answer
        self._head = is_head
        self._status = 0
        self._headers = []
        self._body = []
        self._ends_with_eof = False
        self._active_at = self._loop.time()
        self._timer = self._loop.call_at(self._active_at + self._timeout, self._check_timeout)
        try:
            if body is None or isinstance(body, bytes):
                transport.write(head + body if body else head)
            else:
                transport.write(head)
                await self._send_stream(body, length)
            return await answer
        finally:
            self._timer.cancel()
            self._answer = None
            if answer.done() and not answer.cancelled():
                answer.exception()  # a failure while sending is the one raised; this one is seen

    async def _send_stream(self, chunks: AsyncIterator[bytes], length: int | None) -> None:
        transport = self._transport
        assert transport is not None
        sent = 0
        async for chunk in chunks:
            if not chunk:
                continue
            if self._answer is not None and self._answer.done():
                self._keep_alive = False  # the peer may still expect the rest: never reuse
                return  # answered early (an error, typically): the rest is not wanted
            sent += len(chunk)
            if length is None:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            elif sent > length:
                raise ValueError(f"The request body is longer than its Content-Length ({length}).")
            else:
                transport.write(chunk)
            if self._paused:
                await self._drained()
        if length is None:
            transport.write(b"0\r\n\r\n")
        elif sent != length:
            raise ValueError(f"The request body ended after {sent} of its {length} bytes.")

    async def _drained(self) -> None:
        while self._paused and not self.closed:
            self._writable = self._loop.create_future()
            try:
                await self._writable
            finally:
                self._writable = None
        if self.closed:
            raise ConnectionFailed("The connection closed while the request was sent.")

    def _wake_writer(self, exc: Exception | None) -> None:
        writable = self._writable
        if writable is not None and not writable.done():
            if exc is None:
                writable.set_result(None)
            else:
                writable.set_exception(exc)

    def _check_timeout(self) -> None:
        quiet_until = self._active_at + self._timeout
        if self._loop.time() < quiet_until:
            self._timer = self._loop.call_at(quiet_until, self._check_timeout)
            return
        error = ReadTimeout(f"No progress from the provider for {self._timeout:g} s.")
        self._fail(error)
        self._wake_writer(error)

    def _complete(self) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        headers: CIMultiDict[str] = CIMultiDict(self._headers)
        content = b"".join(self._body)
        encoding = headers.get("content-encoding", "").strip().lower()
        if content and encoding in ("gzip", "x-gzip", "deflate"):
            try:
                content = _decode(content, encoding)
            except zlib.error as exc:
                self._fail(ConnectionFailed(f"The provider's {encoding} body is corrupt ({exc})."))
                return
        answer.set_result(ProviderResponse(self._status, headers, content))

    def _fail(self, exc: TransportError) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_exception(exc)
        self.close()

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self.closed and not self._paused

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def _decode(content: bytes, encoding: str) -> bytes:
    if encoding == "deflate":
        try:
            return zlib.decompress(content)  # zlib-wrapped, as RFC 9110 says
        except zlib.error:
            return zlib.decompress(content, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    return zlib.decompress(content, 16 + zlib.MAX_WBITS)


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to any number of origins (see the module docstring).

    Make and use it on one event loop; `aclose` closes the idle connections.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 100,
        max_idle_per_origin: int = 20,
        keepalive_seconds: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle_per_origin
        self._keepalive = keepalive_seconds
        self._ssl = ssl_context
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._origins: dict[str, tuple[_Origin, str]] = {}

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | AsyncIterator[bytes] | None = None,
    ) -> ProviderResponse:
        """`method url` with `headers` (plus `Host`, and the body's length or chunking)."""
        origin, host, target = self._split(url)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        length: int | None = None
        agent = False
        for name, value in headers.items():
            lowered = name.lower()
            if lowered == "content-length":
                length = int(value)
            agent = agent or lowered == "user-agent"
            lines.append(f"{name}: {value}")
        if not agent:
            lines.append(_USER_AGENT)
        if isinstance(body, bytes):
            if length is None:
                lines.append(f"Content-Length: {len(body)}")
            elif length != len(body):
                raise ValueError(f"The request body has {len(body)} bytes, not its Content-Length {length}.")
        elif body is not None and length is None:
            lines.append("Transfer-Encoding: chunked")
        elif body is None and method in ("POST", "PUT", "PATCH") and length is None:
            lines.append("Content-Length: 0")
        text = "\r\n".join(lines)
        if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
            raise ValueError("A request header name or value contains a line break.")
        head = (text + "\r\n\r\n").encode()
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self._read_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise ReadTimeout(f"No free provider connection for {self._read_timeout:g} s.") from None
        else:
            await slots.acquire()
        try:
            conn = self._idle_connection(origin) or await self._connect(origin)
            try:
                answer = await conn.exchange(head, body, length, method == "HEAD")
            except BaseException:
                conn.close()
                raise
            self._release(origin, conn)
            return answer
        finally:
            slots.release()

    def _split(self, url: str) -> tuple[_Origin, str, str]:
        """(origin, Host header, request target) of an absolute http(s) URL."""
        start = url.find("://") + 3
        end = len(url)
        for mark in "/?#":
            at = url.find(mark, start)
            if 0 <= at < end:
                end = at
        base = url[:end]
        known = self._origins.get(base)
        if known is None:
            parts = urllib.parse.urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"Not an http(s) URL: {base!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = parts.netloc.rpartition("@")[2]
            known = ((parts.scheme, parts.hostname, port), host)
            if len(self._origins) < 1024:
                self._origins[base] = known
        target = url[end:].partition("#")[0]
        if not target.startswith("/"):
            target = "/" + target
        if " " in target:
            raise ValueError(f"A request target contains a space: {target!r}")
        return known[0], known[1], target

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()  # most recently used: the least likely to have been closed
            if not conn.closed and now - conn.idle_since < self._keepalive:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: _Origin) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            context = self._ssl or _default_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            limit = self._connect_timeout
            raise ConnectTimeout(f"No connection to {host}:{port} within {limit:g} s.") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionFailed(f"Could not connect to {host}:{port} ({type(exc).__name__}).") from exc
        return conn

    def _release(self, origin: _Origin, conn: _Connection) -> None:
        if not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    async def aclose(self) -> None:
        """Close every idle connection (calls in flight close theirs when they end)."""
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()


@functools.cache  # loading the system's CA certificates once, on the first https call
def _default_context() -> ssl.SSLContext:
    return ssl.create_default_context()
