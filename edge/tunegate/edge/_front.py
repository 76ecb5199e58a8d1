"""The edge's own HTTP/1.1 front: keep-alive connections answering the JSON routes itself, and
handing a connection to aiohttp's server, mid-stream, for everything else.

Why: every REST call paid for aiohttp's request, URL, stream reader, response and writer
objects. Here a request head is parsed by llhttp (``httptools``, already the provider client's
parser), the body sliced by its Content-Length, and the answer written with one
``transport.write``. Measured under ``tunegate run`` (``bench/RESULTS.md``, session 7): an
unrouted GET 70 → 47 µs of CPU, ``GET /v1/fine_tuning/jobs/{id}`` 277 → 224 µs at c=16.

What this front serves itself: an ``origin-form`` target whose path is plain (letters, digits,
``- _ . ~ /``, no dot segment, no ``//``), a head of at most 8190 bytes, no body or a
``Content-Length`` body of at most 1 MiB, no ``Transfer-Encoding``, no upgrade, to a route that
is not a stream (uploads and downloads are) — which is every call an SDK makes but those two.
Everything else — a chunked body, a percent-encoded path, a malformed or bare-LF head, an
oversized one, an upload — is handed to aiohttp with every byte the client sent from the start
of that request, so its behaviour there (streaming, 400s, 413s) is exactly aiohttp's; the
connection then stays with aiohttp until it closes. ``Expect: 100-continue`` gets its
``100 Continue`` here, before the body, whichever server then answers (aiohttp's low-level
server sends none: the client would wait, curl a second).

HTTP/1.1 as it applies: requests on a connection are answered in order, one at a time
(pipelined requests wait in the buffer; reading pauses while more than 1 MiB waits; no request
is started while the client is not reading answers); ``Connection: close`` and HTTP/1.0 without
keep-alive close after the answer; a client's half-close still gets the answer in flight; a
connection that has finished no request for ``keepalive`` seconds (75, as aiohttp) is closed;
``HEAD`` gets the headers only. A handler keeps running when its client goes away (as with
aiohttp's default): a job being created is never abandoned half-way by a dropped socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools
from aiohttp import web
from multidict import CIMultiDict, MultiDict
from tunegate.edge._http import Incoming, Reply

if TYPE_CHECKING:
    from tunegate.edge._app import EdgeHandler, Resolution

__all__ = ["MAX_BODY", "MAX_HEAD", "Front", "split_target"]

logger = logging.getLogger("tunegate.edge")

MAX_HEAD = 8190
"""Request line and headers this front reads before leaving the request to aiohttp: aiohttp's
longest line, so no head it would refuse is ever accepted here."""
MAX_BODY = 1024 * 1024
"""Largest body answered here: aiohttp's ``client_max_size``, so a bigger one gets its 413."""
_MAX_WAITING = 1024 * 1024  # buffered bytes behind the request being answered before reading pauses
_KEEPALIVE = 75.0
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+/?|/")
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}
_JSON_HEADERS = b"Content-Type: application/json; charset=utf-8\r\n"
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def split_target(target: str) -> tuple[str, MultiDict[str]] | None:
    """An origin-form request target → (path, query) when its path is plain (nothing to
    decode, no dot segment, no empty segment), else None (aiohttp decides). The query is
    parsed as aiohttp's URL does it (``&``-separated, ``+`` is a space, blanks kept)."""
    path, _, query = target.partition("?")
    if "#" in target or not target.isascii() or _PLAIN_PATH.fullmatch(path) is None:
        return None
    return path, MultiDict(urllib.parse.parse_qsl(query, keep_blank_values=True) if query else ())


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n".encode()
        return self._line


def _encode(reply: Reply, date: bytes, keep_alive: bool, head_only: bool) -> bytes:
    status = _STATUS_LINES.get(reply.status) or f"HTTP/1.1 {reply.status} Unknown\r\n".encode()
    parts = [status, _JSON_HEADERS, b"Content-Length: %d\r\n" % len(reply.body), date]
    for name, value in reply.headers.items():
        if _UNSAFE_VALUE.search(name) or _UNSAFE_VALUE.search(value):
            logger.warning("dropping response header %r: control characters", name)
            continue
        parts.append(f"{name}: {value}\r\n".encode())
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(reply.body)
    return b"".join(parts)


class _Head:
    """One request head, parsed by llhttp (these are its callbacks)."""

    __slots__ = ("complete", "headers", "keep_alive", "method", "parser", "upgrade", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.parser: httptools.HttpRequestParser | None = None  # only while it parses (no cycle)
        self.method = ""
        self.version = ""
        self.keep_alive = False
        self.upgrade = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Read here: llhttp resets its flags (keep-alive among them) once the message is complete.
        parser = self.parser
        assert parser is not None
        self.method = parser.get_method().decode("ascii")
        self.version = parser.get_http_version()
        self.keep_alive = parser.should_keep_alive()
        self.upgrade = parser.should_upgrade()
        self.complete = True


@dataclass(slots=True)
class _Request:
    """A request this front answers, head parsed; its body is ``buffer[start:end]``."""

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str]
    resolved: Resolution
    keep_alive: bool
    start: int
    end: int


class Front:
    """The protocol factory for ``loop.create_server``, the connections it made, and the
    aiohttp server handed the requests this front leaves alone."""

    def __init__(
        self, responder: EdgeHandler, fallback: web.Server, *, keepalive: float = _KEEPALIVE
    ) -> None:
        self.responder = responder
        self.fallback = fallback
        self.keepalive = keepalive
        self.date = _Date()
        self._connections: set[_Connection] = set()
        self._closing = False

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    def _track(self, connection: _Connection) -> None:
        self._connections.add(connection)
        if self._closing:
            connection.close_when_idle()

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    async def shutdown(self, grace: float) -> None:
        """Close idle connections now and the others once their answer is written (waiting at
        most ``grace`` seconds for those), then shut aiohttp's connections down. Stop the
        listening server first: connections accepted later are closed when idle."""
        self._closing = True
        await asyncio.sleep(0)  # requests already received get started first (as aiohttp does)
        self.fallback.pre_shutdown()  # aiohttp's idle connections close now
        busy = []
        for connection in list(self._connections):
            task = connection.close_when_idle()
            if task is not None:
                busy.append(task)
        if busy:
            await asyncio.wait(busy, timeout=grace)
        for connection in list(self._connections):
            connection.abort()
        await self.fallback.shutdown(grace)


class _Connection(asyncio.Protocol):
    def __init__(self, front: Front) -> None:
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._buffer = bytearray()
        self._pending: _Request | None = None  # head parsed, body not yet all here
        self._task: asyncio.Task[None] | None = None  # the answer being made
        self._reading_paused = False
        self._writing_paused = False
        self._eof = False
        self._closing = False
        self._idle_since = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) and peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._timer = self._loop.call_later(self._front.keepalive, self._check_idle)
        self._front._track(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._advance()
        # Bytes beyond the request being read (or answered) wait; past 1 MiB, stop reading until
        # the requests before them are answered (also while the client reads no answers).
        waiting = len(self._buffer) - (self._pending.end if self._pending is not None else 0)
        if waiting > _MAX_WAITING and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        # Keep the socket half-open while an answer is being made; otherwise close it.
        return self._task is not None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._task is None:
            self._advance()

    def connection_lost(self, exc: Exception | None) -> None:
        self._detach()
        self._buffer.clear()
        self._pending = None

    def _detach(self) -> None:
        """Let go of the transport (closed, or handed to aiohttp): no timer, not tracked."""
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
        self._front._forget(self)

    # --- shutdown

    def close_when_idle(self) -> asyncio.Task[None] | None:
        """Close now if no answer is being made, else after it; that answer's task, if any."""
        self._closing = True
        if self._task is None and self._transport is not None:
            self._transport.close()
        return self._task

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- requests

    def _advance(self) -> None:
        """Start answering the next complete request in the buffer, if any (one at a time)."""
        while self._task is None and not self._writing_paused and self._transport is not None:
            request = self._pending
            if request is None:
                request = self._pending = self._read_head()
                if request is None:
                    return
            if len(self._buffer) < request.end:
                return  # the body is still on its way
            self._pending = None
            body = bytes(self._buffer[request.start : request.end])
            del self._buffer[: request.end]
            if self._reading_paused and len(self._buffer) <= _MAX_WAITING:
                self._reading_paused = False
                self._transport.resume_reading()
            incoming = Incoming(
                request.method, request.path, request.query, request.headers, self._peer, body
            )
            self._task = self._loop.create_task(self._answer(request, incoming))

    def _read_head(self) -> _Request | None:
        """The next request's head, when all of it is here and this front answers it; hands
        the connection to aiohttp when it does not. None: wait (or handed over)."""
        buffer = self._buffer
        skip = 0
        while buffer.startswith(b"\r\n", skip):  # stray line breaks between requests (RFC 9112 §2.2)
            skip += 2
        if skip:
            del buffer[:skip]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD or b"\n\n" in buffer:
                self._hand_over()
            return None
        head_end = end + 4
        if head_end > MAX_HEAD or buffer.find(b"\n\n", 0, end) >= 0:
            self._hand_over()
            return None
        head = _Head()
        head.parser = httptools.HttpRequestParser(head)
        try:
            head.parser.feed_data(bytes(buffer[:head_end]))
        except httptools.HttpParserError:
            head.complete = False
        head.parser = None  # the parser refers to `head`: a cycle only the collector would free
        try:
            request, expects_continue = self._accept(head, head_end) if head.complete else (None, False)
        except Exception:  # a head llhttp took but this front cannot: aiohttp decides
            logger.exception("edge front: leaving an unexpected request head to aiohttp")
            request, expects_continue = None, False
        if expects_continue:
            # The client waits for this before sending the body (aiohttp's low-level server
            # never sends it, so it is sent here for the requests handed to it too).
            cast(asyncio.Transport, self._transport).write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if request is None:
            self._hand_over()
        return request

    def _accept(self, head: _Head, head_end: int) -> tuple[_Request | None, bool]:
        """The request, when this front answers it (None: aiohttp does), and whether the client
        waits for ``100 Continue`` before it sends the body."""
        expect: str | None = None
        length = 0
        chunked = False
        headers: CIMultiDict[str] = CIMultiDict()
        for raw_name, raw_value in head.headers:
            name = raw_name.decode("utf-8", "surrogateescape")
            value = raw_value.decode("utf-8", "surrogateescape")
            headers.add(name, value)
            lowered = name.lower()
            if lowered == "expect":
                expect = value.strip().lower()
            elif lowered == "content-length":
                if not (value.isascii() and value.isdigit()):  # llhttp allows no other spelling
                    return None, False
                length = int(value)
            elif lowered == "transfer-encoding":
                chunked = True
        if expect is not None and (expect != "100-continue" or head.version != "1.1"):
            return None, False
        # A 100 is owed while a body is still to come (chunked, or Content-Length not all here).
        expects_continue = expect is not None and (chunked or len(self._buffer) < head_end + length)
        if chunked:
            return None, expects_continue
        split = split_target(head.url.decode("ascii", "replace"))
        if split is None or head.upgrade or length > MAX_BODY:
            return None, expects_continue
        path, query = split
        resolved = self._front.responder.resolve(head.method, path)
        if resolved.streams:
            return None, expects_continue
        request = _Request(
            head.method, path, query, headers, resolved, head.keep_alive, head_end, head_end + length
        )
        return request, expects_continue

    async def _answer(self, request: _Request, incoming: Incoming) -> None:
        try:
            reply = await self._front.responder.answer(incoming, request.resolved)
        finally:
            self._task = None
        transport = self._transport
        if transport is None:
            return  # the client went away; its answer has nobody to read it
        keep_alive = request.keep_alive and not self._closing and not self._eof
        transport.write(_encode(reply, self._front.date.line(), keep_alive, request.method == "HEAD"))
        self._idle_since = self._loop.time()
        if not keep_alive:
            transport.close()
            return
        if self._buffer:
            self._advance()

    def _hand_over(self) -> None:
        """Give the connection, and every byte of the request not answered here, to aiohttp."""
        transport = self._transport
        if transport is None:
            return
        self._detach()
        data = bytes(self._buffer)
        self._buffer.clear()
        protocol = self._front.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._reading_paused:
            transport.resume_reading()
        if data:
            protocol.data_received(data)
        if self._eof:
            protocol.eof_received()

    def _check_idle(self) -> None:
        transport = self._transport
        if transport is None:
            return
        idle = self._loop.time() - self._idle_since
        if self._task is None and idle >= self._front.keepalive:
            transport.close()
            return
        wait = self._front.keepalive - idle if self._task is None else self._front.keepalive
        self._timer = self._loop.call_later(max(wait, 0.01), self._check_idle)
