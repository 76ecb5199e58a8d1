"""The edge's HTTP/1.1 connections: aiohttp's ``RequestHandler`` with a request-head timeout, a
few closing rules, and the edge's error envelope on the answers aiohttp makes itself.

aiohttp parses, limits and frames every request (``_config.server_options``); it refuses a head
with a line or field over its limit, too many fields, no ``Host`` on HTTP/1.1 or two ``Host``
fields, with a 400. Its keep-alive timer closes a connection that waits for a request — just
opened, or after an answer — ``keepalive_timeout`` seconds after it began to wait, whether or not
a head is trickling in meanwhile. `EdgeConnection` adds a shorter bound on the head itself:

* the head timer is armed by bytes that arrive while no request is being read (the previous
  request's body, if any, is complete), and disarmed when they complete a head;
* an answer disarms it too (bytes that arrived with the end of a body may just as well have
  been its last ones); a head that began before the answer is left to the keep-alive timer;
* when it fires while the connection waits for that head, the connection answers a 408 through
  aiohttp's own error path and closes.

Shutdown: aiohttp's `close` and `shutdown` stop reading a connection at once, which would stall
a request whose body is still arriving (an upload) until its body timeout; here such a body is
read to its end, the request answered, and the connection closed after it.

Closing rules: a client's half-close (``shutdown(SHUT_WR)``) once its request is all sent still
gets the answer in flight (aiohttp alone would close at once), while an end of stream in the
middle of a body is a client gone; an answer that closes the connection skips aiohttp's lingering
read of an unread body (the client of a stalled body is not sending it).

A handler that must stop work when its client goes away (a streamed chat answer's call) registers
a callback with `on_client_gone`: the edge keeps handlers running when a client leaves
(``handler_cancellation=False``), so a handler waiting on the server would otherwise learn of it
only at its next write.

``handle_error`` renders what aiohttp refuses (parse errors, the 408) as the OpenAI error envelope
with an ``x-request-id``, like every other answer of the edge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from tunegate.edge._errors import error_response
from tunegate.edge._headers import new_request_id
from tunegate.edge._http import error_json, web_response
from tunegate.edge._redact import redact

__all__ = ["EdgeConnection", "EdgeHTTPServer", "HeadTimeout", "on_client_gone"]

logger = logging.getLogger("tunegate.edge")


class HeadTimeout(Exception):
    """A request head took longer than the head timeout to arrive."""


class EdgeConnection(RequestHandler):
    """One client connection: aiohttp's, plus the head timer and the edge's error answers."""

    __slots__ = ("_gone", "_head_timeout", "_head_timer", "_last_payload")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_payload: StreamReader = EMPTY_PAYLOAD
        self._gone: list[tuple[Callable[[], None], bool]] | None = []

    def data_received(self, data: bytes) -> None:
        if (self._close or self._force_close) and self._body_arriving():
            # Shutting down (aiohttp's `close`/`shutdown`), aiohttp would drop these bytes and
            # the request in flight would stall until its body timeout. Its body is read to the
            # end; the connection still closes after its answer.
            closing = (self._close, self._force_close)
            self._close = self._force_close = False
            try:
                self._receive(data)
            finally:
                self._close, self._force_close = closing
            return
        self._receive(data)

    def _body_arriving(self) -> bool:
        return bool(self._request_in_progress or self._messages) and not self._last_payload.is_eof()

    def _receive(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a head (or a refusal) is complete
            self._last_payload = self._messages[-1][1] if self._messages else EMPTY_PAYLOAD
            self._disarm()
        elif data and self._head_timer is None and self._last_payload.is_eof():
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol's signature
        """A client that half-closes once its request is sent still gets the answer: the
        connection stays half-open while a request whose body is all here is under way, then
        closes. An end mid-body is a client gone: the connection closes, the reader fails.

        Callbacks registered with ``eof=True`` (a streamed answer's) run at the end of stream,
        half-close or not: a client cannot tell one from a close without a write, and a client
        that closes while a stream is under way has left (nginx treats it the same way)."""
        self._client_gone(eof_only=True)
        if (self._request_in_progress or self._messages) and self._last_payload.is_eof():
            self.close()
            return True
        return False  # asyncio closes the transport

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        self._disarm()
        result = await super().finish_response(request, resp, start_time)
        if resp.keep_alive is False and not request.content.is_eof():
            # An answer that closes the connection (a stalled body's 408) skips aiohttp's
            # lingering read of the rest of the body: the client is not sending it.
            self.force_close()
        return result

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self._client_gone(eof_only=False)

    def _client_gone(self, *, eof_only: bool) -> None:
        if self._gone is None:
            return
        due = [entry for entry in self._gone if entry[1] or not eof_only]
        self._gone = [entry for entry in self._gone if entry not in due]
        if not eof_only:
            self._gone = None
        for callback, _ in due:
            try:
                callback()
            except Exception:
                logger.exception("a client-gone callback failed")

    def when_gone(self, callback: Callable[[], None], *, eof: bool = False) -> Callable[[], None]:
        """Call ``callback`` once the connection is lost — with ``eof``, already when the client
        ends its side of it — or at once if it already is; returns the function that
        unregisters it."""
        if self._gone is None:
            callback()
            return _nothing
        entry = (callback, eof)
        self._gone.append(entry)

        def unregister() -> None:
            if self._gone is not None and entry in self._gone:
                self._gone.remove(entry)

        return unregister

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._force_close or self._close or self._request_in_progress or self._messages:
            return  # a request is being answered (its answer disarms) or waits to be
        message = f"The request head did not arrive within {self._head_timeout:g} seconds."
        self._messages.append(
            (_ErrInfo(status=408, exc=HeadTimeout(message), message=message), EMPTY_PAYLOAD)
        )
        self._close = True  # nothing after the head that never came can be framed
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp refused (or a handler failure aiohttp caught): the
        error envelope; the connection closes after it. A refusal's text (which may quote a raw
        header line) is redacted before it is logged or answered; the body is never logged."""
        if status >= 500:
            logger.error("request from %s failed", request.remote, exc_info=exc)
            message = HTTPStatus(status).phrase
        else:
            message = redact(str(message or exc or HTTPStatus(status).phrase))
            logger.debug("refused a request from %s: %s", request.remote, message)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was under way; the connection is broken")
        reply = error_json(error_response(status, message or HTTPStatus(status).phrase), new_request_id())
        response = web_response(reply)
        response.force_close()
        return response


def _nothing() -> None:
    pass


def on_client_gone(
    request: web.BaseRequest, callback: Callable[[], None], *, eof: bool = False
) -> Callable[[], None]:
    """Call ``callback`` when ``request``'s client connection is lost — with ``eof``, already when
    the client ends its side of it (see `EdgeConnection.eof_received`); returns the function
    that unregisters it (call it once the work it would stop is over)."""
    protocol = request.protocol
    if isinstance(protocol, EdgeConnection):
        return protocol.when_gone(callback, eof=eof)
    return _nothing


class EdgeHTTPServer(web.Server):
    """aiohttp's low-level server making `EdgeConnection` protocols."""

    def __init__(self, handler: Any, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._head_timeout = head_timeout

    def __call__(self) -> EdgeConnection:
        return EdgeConnection(self, loop=self._loop, head_timeout=self._head_timeout, **self._kwargs)
