"""The edge's HTTP server: aiohttp's low-level server (``_protocol``) calling one handler,
`EdgeHandler`, which routes by the table from ``_routes`` — one generic unary handler, two
streaming handlers chosen by cardinality, health, the OpenAPI document (``_openapi``) — and
makes every answer, success or error, routed or not, carry ``x-request-id`` and the one error
envelope. A pass-through route (the raw body in a ``google.api.HttpBody`` field, OpenAI's chat)
is served by ``_passthrough``; a query route with ``(streamed_by)`` serves ``stream=true`` as
server-sent events (``_sse``). ``/console`` serves the web console's static files (``_console``).

Why not ``web.Application``: its router, middleware chain and per-request app plumbing cost
~30 µs a request; the edge needs only a fixed table of templates, resolved here the way
aiohttp's dispatcher resolves them.

What the handler refuses before routing, closing the connection after the answer: ``CONNECT``
(405; what follows it would be tunnel bytes) and a request asking for a protocol upgrade (400).
An upgrade request closes the connection because aiohttp's C parser (3.14) drops the bytes that
arrived behind such a request when it does not switch protocols (``h2c``): requests pipelined
after it would otherwise wait for the keep-alive timeout, unanswered.

While the edge drains (`EdgeServer.stop`), every request the handler gets is answered 503 with
``x-should-retry: true``, ``Retry-After: 1`` and ``Connection: close``, and reaches no server.

A routed request that has a body and sends ``Expect: 100-continue`` gets its ``100 Continue``
(curl waits for it before a large upload); an upload gets it once the server has accepted the
call, so a refused upload's body is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import grpc
import orjson
from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler
from grpc_health.v1 import health_pb2
from tunegate.edge._config import EdgeConfig, channel_options, server_options
from tunegate.edge._console import CONSOLE_PATH, Console
from tunegate.edge._download import handle_download
from tunegate.edge._errors import ErrorResponse, error_response
from tunegate.edge._headers import REQUEST_ID, request_id_from
from tunegate.edge._http import (
    ErrorAnswer,
    Incoming,
    Reply,
    build_message,
    call_context,
    error_json,
    query_message,
    read_body,
    rpc_error,
    web_response,
)
from tunegate.edge._openapi import OPENAPI_PATH, served_document
from tunegate.edge._passthrough import handle_passthrough
from tunegate.edge._protocol import EdgeHTTPServer
from tunegate.edge._routes import Cardinality, Route, build_routes
from tunegate.edge._sse import relay_events, stream_asked
from tunegate.edge._upload import handle_upload
from tunegate.openai_json import CodecError, to_openai

__all__ = ["EdgeHandler", "EdgeServer", "serve"]

logger = logging.getLogger("tunegate.edge")

UnaryHandler = Callable[[Incoming, Mapping[str, str], str], Awaitable[Reply]]
"""A JSON route's handler: the request (body read), its path parameters and its request id."""
StreamHandler = Callable[[web.BaseRequest, Mapping[str, str], str], Awaitable[web.StreamResponse]]
"""An upload's or a download's handler, on aiohttp's request."""

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SHUTDOWN_TIMEOUT = 60.0  # seconds in-flight requests get to finish on stop (aiohttp's default)
_LATE_TIMEOUT = 5.0  # seconds the connections made during the drain get to finish their 503
_DRAINING = error_response(
    503, "The gateway is shutting down; retry the request.", code="shutting_down", retry_delay_s=1
)
_BACKLOG = 128
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _asks_upgrade(headers: Mapping[str, str]) -> bool:
    """Whether a request asks to switch protocols (RFC 9110 §7.8: ``Upgrade`` named in ``Connection``)."""
    if "Upgrade" not in headers:
        return False
    connection = ",".join(cast(Any, headers).getall("Connection", ()))
    return "upgrade" in (token.strip().lower() for token in connection.split(","))


class _NotFound(Exception):
    pass


class _MethodNotAllowed(Exception):
    def __init__(self, allowed: Iterable[str]) -> None:
        super().__init__()
        self.allowed = ",".join(sorted(allowed))


def _unquote(value: str) -> str:
    # Matching runs on aiohttp's `path_safe` (decoded but for %2F and %25), as its dispatcher
    # does; a matched value is then decoded the rest of the way.
    return value.replace("%2F", "/").replace("%25", "%") if "%" in value else value


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """A routed path + method: a JSON route (``unary``) or a stream (``stream``)."""

    unary: UnaryHandler | None = None
    stream: StreamHandler | None = None
    reads_body: bool = False
    expects: bool = True
    """Whether ``Expect: 100-continue`` is answered before the handler runs (an upload's
    handler answers it itself, once the server has accepted the call)."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a method and path resolve to: an endpoint and its path parameters, or the miss."""

    endpoint: _Endpoint | None
    params: Mapping[str, str]
    miss: _NotFound | _MethodNotAllowed | None = None


class _Table:
    """Method + path → endpoint and path parameters: literal paths by dictionary, templates
    (``{field}`` matching one non-empty segment) in the order they were added."""

    def __init__(self) -> None:
        self._literal: dict[str, dict[str, _Endpoint]] = {}
        self._templates: dict[str, tuple[re.Pattern[str], dict[str, _Endpoint]]] = {}

    def add(self, method: str, template: str, endpoint: _Endpoint) -> None:
        if _VARIABLE.search(template) is None:
            self._literal.setdefault(template, {})[method] = endpoint
            return
        if template not in self._templates:
            pattern = "".join(
                f"(?P<{piece}>[^{{}}/]+)" if i % 2 else re.escape(piece)
                for i, piece in enumerate(_VARIABLE.split(template))
            )
            self._templates[template] = (re.compile(pattern), {})
        self._templates[template][1][method] = endpoint

    def resolve(self, method: str, path: str) -> Resolution:
        allowed: set[str] = set()
        methods = self._literal.get(path)
        if methods is not None:
            if method in methods:
                return Resolution(methods[method], {})
            allowed.update(methods)
        for pattern, methods in self._templates.values():
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method in methods:
                return Resolution(methods[method], {k: _unquote(v) for k, v in match.groupdict().items()})
            allowed.update(methods)
        return Resolution(None, {}, _MethodNotAllowed(allowed) if allowed else _NotFound())


class EdgeHandler:
    """The one request handler: assigns the request id, routes, calls, and renders every
    failure as the OpenAI envelope carrying that id.

    Calls go through ``channel``: to ``config.grpc_target`` over a channel the `EdgeServer`
    opens, or the server's in-process channel under ``tunegate run``. Raises RouteError at
    construction if an annotation cannot be served."""

    def __init__(self, config: EdgeConfig, channel: grpc.aio.Channel) -> None:
        self.config = config
        self.channel = channel
        self.draining = False
        """Set when the edge begins to shut down: from then on every request is answered
        503 (``_DRAINING``, the connection closing after it) and reaches no server."""
        self._table = _Table()
        health = _Endpoint(unary=self._healthz())
        self._table.add("GET", "/healthz", health)
        self._table.add("HEAD", "/healthz", health)
        document = _Endpoint(unary=self._openapi())
        self._table.add("GET", OPENAPI_PATH, document)
        self._table.add("HEAD", OPENAPI_PATH, document)
        console = Console()
        for path, serve in (
            (CONSOLE_PATH, console.index),
            (CONSOLE_PATH + "/", console.index),
            (CONSOLE_PATH + "/{asset}", console.asset),
        ):
            for method in ("GET", "HEAD"):
                self._table.add(method, path, _Endpoint(stream=serve, expects=False))
        for route in build_routes():
            if route.passes_body:
                endpoint = _Endpoint(stream=self._passthrough(route))
            elif route.streams_by_query:
                endpoint = _Endpoint(stream=self._unary_or_stream(route, self._unary(route)), expects=False)
            elif route.cardinality is Cardinality.UNARY:
                endpoint = _Endpoint(unary=self._unary(route), reads_body=route.body == "*")
            else:
                uploads = route.cardinality is Cardinality.CLIENT_STREAMING
                endpoint = _Endpoint(stream=self._streaming(route), expects=not uploads)
            self._table.add(route.verb, route.path, endpoint)

    def resolve(self, method: str, path_safe: str) -> Resolution:
        """Where a request goes (``path_safe``: decoded but for ``%2F`` and ``%25``)."""
        return self._table.resolve(method, path_safe)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        request_id = request_id_from(request.headers)
        if self.draining:
            response = web_response(error_json(_DRAINING, request_id))
            response.force_close()
            return response
        try:
            return await self._serve(request, request_id)
        except Exception as exc:
            response = web_response(self._failure(exc, request.method, request.path, request_id))
            closes = isinstance(exc, ErrorAnswer) and exc.close
            if closes or request.method == "CONNECT" or _asks_upgrade(request.headers):
                response.force_close()  # the rest of what the client sent cannot be framed (or was lost)
            return response

    async def _serve(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        if request.method == "CONNECT":
            raise _MethodNotAllowed(())
        if _asks_upgrade(request.headers):
            raise ErrorAnswer(
                error_response(400, "Protocol upgrades are not supported.", code="upgrade_not_supported")
            )
        resolution = self.resolve(request.method, request.rel_url.path_safe)
        if resolution.miss is not None:
            raise resolution.miss
        endpoint = resolution.endpoint
        assert endpoint is not None
        takes_body = endpoint.stream is not None or endpoint.reads_body
        if takes_body and endpoint.expects and "Expect" in request.headers:
            # aiohttp's own (web.Application's): `100 Continue`, or a 417 for another expectation.
            await _default_expect_handler(cast(web.Request, request))
        if endpoint.stream is not None:
            response = await endpoint.stream(request, resolution.params, request_id)
            if not response.prepared:
                response.headers[REQUEST_ID] = request_id
            return response
        assert endpoint.unary is not None
        body = b""
        if endpoint.reads_body:
            body = await read_body(request, self.config.max_json_bytes, self.config.body_timeout)
        incoming = Incoming(
            request.method, request.path, request.query, request.headers, request.remote, body
        )
        return web_response(await endpoint.unary(incoming, resolution.params, request_id))

    def _failure(self, exc: Exception, method: str, path: str, request_id: str) -> Reply:
        """The error answer for what a request raised. Call it from the ``except`` block."""
        error: ErrorResponse
        if isinstance(exc, ErrorAnswer):
            error = exc.error
        elif isinstance(exc, CodecError):
            error = error_response(400, exc.message, param=exc.param)
        elif isinstance(exc, _NotFound):
            error = error_response(404, f"Invalid URL ({method} {path})", code="unknown_url")
        elif isinstance(exc, _MethodNotAllowed):
            error = error_response(405, f"Method not allowed ({method} {path})", code="method_not_allowed")
            if exc.allowed:
                error.headers["Allow"] = exc.allowed
        elif isinstance(exc, web.HTTPException):
            error = error_response(exc.status, exc.reason)
        elif isinstance(exc, ConnectionError):
            # The client went away mid-request; nobody will read an answer.
            logger.debug("request %s: client disconnected", request_id)
            error = error_response(499, "Client closed the request.")
        else:
            logger.exception("request %s: unhandled error", request_id)
            error = error_response(500, "The gateway failed to handle the request.")
        return error_json(error, request_id)

    def _unary(self, route: Route) -> UnaryHandler:
        rpc = self.channel.unary_unary(
            route.method_path,
            request_serializer=route.request_cls.SerializeToString,
            response_deserializer=route.response_cls.FromString,
        )
        timeout = self.config.unary_timeout

        async def handle(incoming: Incoming, params: Mapping[str, str], request_id: str) -> Reply:
            ctx = call_context(incoming.headers, incoming.remote, request_id)
            message = build_message(route, params, incoming.headers, incoming.query, incoming.body)
            try:
                result = await rpc(message, metadata=ctx.metadata, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                raise ErrorAnswer(rpc_error(err)) from None
            return Reply(200, orjson.dumps(to_openai(result)), {REQUEST_ID: request_id})

        return handle

    def _streaming(self, route: Route) -> StreamHandler:
        stream = handle_upload if route.cardinality is Cardinality.CLIENT_STREAMING else handle_download

        async def handle(
            request: web.BaseRequest, params: Mapping[str, str], request_id: str
        ) -> web.StreamResponse:
            ctx = call_context(request.headers, request.remote, request_id)
            return await stream(request, route, params, self.channel, self.config, ctx)

        return handle

    def _passthrough(self, route: Route) -> StreamHandler:
        async def handle(
            request: web.BaseRequest, params: Mapping[str, str], request_id: str
        ) -> web.StreamResponse:
            ctx = call_context(request.headers, request.remote, request_id)
            return await handle_passthrough(request, route, params, self.channel, self.config, ctx)

        return handle

    def _unary_or_stream(self, route: Route, unary: UnaryHandler) -> StreamHandler:
        """A query route with ``(streamed_by)``: ``stream=true`` in the query is served by the
        streaming RPC as server-sent events (``_sse``), anything else by ``unary``."""
        assert route.streamed_by is not None and route.streamed_request_cls is not None
        assert route.streamed_response_cls is not None
        method_path, request_cls, response_cls = (
            route.streamed_by,
            route.streamed_request_cls,
            route.streamed_response_cls,
        )

        async def handle(
            request: web.BaseRequest, params: Mapping[str, str], request_id: str
        ) -> web.StreamResponse:
            if not stream_asked(request.query):
                incoming = Incoming(
                    request.method, request.path, request.query, request.headers, request.remote, b""
                )
                return web_response(await unary(incoming, params, request_id))
            ctx = call_context(request.headers, request.remote, request_id)
            message = query_message(request_cls, params, request.headers, request.query)
            channel, config = self.channel, self.config
            return await relay_events(request, method_path, message, response_cls, channel, config, ctx)

        return handle

    def _openapi(self) -> UnaryHandler:
        """``GET /openapi.json``: the OpenAPI document of these routes (``_openapi``), read once."""
        document = served_document()

        async def handle(_incoming: Incoming, _params: Mapping[str, str], request_id: str) -> Reply:
            return Reply(200, document, {REQUEST_ID: request_id})

        return handle

    def _healthz(self) -> UnaryHandler:
        """``GET /healthz``: the gRPC server's overall health (``grpc.health.v1.Health/Check``)."""
        check = self.channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        timeout = min(self.config.unary_timeout, 5.0)

        async def handle(_incoming: Incoming, _params: Mapping[str, str], request_id: str) -> Reply:
            try:
                reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            except grpc.aio.AioRpcError as err:
                status, body = 503, {"status": "NOT_SERVING", "detail": err.code().name}
            else:
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                status, body = (200 if name == "SERVING" else 503), {"status": name}
            return Reply(status, orjson.dumps(body), {REQUEST_ID: request_id})

        return handle


class EdgeServer:
    """A running edge: aiohttp's low-level server bound to ``config.host:config.port``.

    Start and stop it on one event loop (its gRPC channel belongs to that loop).
    """

    def __init__(
        self,
        server: asyncio.Server,
        http: EdgeHTTPServer,
        handler: EdgeHandler,
        config: EdgeConfig,
        port: int,
        owned: grpc.aio.Channel | None,
    ) -> None:
        self._server = server
        self._http = http
        self._handler = handler
        self._owned = owned
        self.config = config
        self.port = port
        """The bound port (the real one when ``config.port`` is 0)."""

    @classmethod
    async def start(cls, config: EdgeConfig, channel: grpc.aio.Channel | None = None) -> EdgeServer:
        """Bind and start serving. Calls go to ``config.grpc_target`` over a channel this server
        opens and closes, or through ``channel`` when given (the caller owns it)."""
        # grpc.aio objects are bound to the loop that made them: the channel is made here.
        owned = None
        if channel is None:
            channel = owned = grpc.aio.insecure_channel(config.grpc_target, options=channel_options(config))
        try:
            handler = EdgeHandler(config, channel)
            http = EdgeHTTPServer(handler, head_timeout=config.head_timeout, **server_options(config))
            loop = asyncio.get_running_loop()
            server = await loop.create_server(http, config.host, config.port, backlog=_BACKLOG)
        except BaseException:
            if owned is not None:
                await owned.close(grace=None)
            raise
        port = int(server.sockets[0].getsockname()[1])
        return cls(server, http, handler, config, port, owned)

    async def stop(self) -> None:
        """Drain, then close, on aiohttp's own shutdown sequence (``web.Server.pre_shutdown``
        and each connection's ``shutdown``) with the listener kept open meanwhile:

        * requests whose handler is running finish (up to a minute), uploads included (their
          bodies are read to the end: `EdgeConnection`); their connections close after them;
        * idle keep-alive connections close at once (what a client sends on one is never
          answered; it sees the close before any byte of an answer, and HTTP clients retry);
        * requests on new connections are answered 503 (`EdgeHandler.draining`), so a client
          is told to retry rather than refused (a late body is not read: a client still
          sending one may see a reset instead of the 503); requests pipelined behind one in
          flight are not answered, their connection closes after it;
        * once the last request in flight is answered, the listener closes and the
          connections made during the drain are closed after their 503.
        """
        try:
            await asyncio.sleep(0)  # requests already received get started first
            self._handler.draining = True
            in_flight = self._http.connections
            self._http.pre_shutdown()
            await asyncio.gather(*(conn.shutdown(_SHUTDOWN_TIMEOUT) for conn in in_flight))
            self._server.close()
            self._http.pre_shutdown()
            await self._http.shutdown(_LATE_TIMEOUT)
            await self._server.wait_closed()
        finally:
            if self._owned is not None:
                await self._owned.close(grace=None)


async def serve(config: EdgeConfig) -> None:
    """Run the edge until SIGTERM or SIGINT, then shut down gracefully. For the CLI."""
    server = await EdgeServer.start(config)
    logger.info(
        "tunegate edge listening on http://%s:%d, gRPC target %s",
        config.host,
        server.port,
        config.grpc_target,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        logger.info("tunegate edge shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
        await server.stop()
