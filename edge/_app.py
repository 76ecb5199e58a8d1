"""The edge's HTTP server: aiohttp's low-level server (its HTTP/1.1 protocol, requests and
responses) around one handler, `EdgeHandler`, which routes by the table from ``_routes`` — one
generic unary handler, two streaming handlers chosen by cardinality, health — and makes every
answer, success or error, routed or not, carry ``x-request-id`` and the one error envelope.

Why not ``web.Application``: its router, middleware chain and per-request app plumbing cost
~30 µs a request (a third of aiohttp's own share of a small call); the edge needs only a fixed
table of templates, resolved here the way aiohttp's dispatcher resolves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2
from tunegate.openai_json import CodecError, to_openai

from edge._config import EdgeConfig, channel_options
from edge._download import handle_download
from edge._errors import error_response
from edge._headers import REQUEST_ID, request_id_from
from edge._http import (
    ErrorAnswer,
    call_context,
    error_json,
    ok_json,
    request_message,
    rpc_error,
)
from edge._routes import Cardinality, Route, build_routes
from edge._upload import handle_upload

__all__ = ["EdgeHandler", "EdgeServer", "serve"]

logger = logging.getLogger("tunegate.edge")

Handler = Callable[[web.BaseRequest, Mapping[str, str], str], Awaitable[web.StreamResponse]]
"""A routed handler: the request, its path parameters and its request id."""

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


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


class _Table:
    """Method + path → handler and path parameters: literal paths by dictionary, templates
    (``{field}`` matching one non-empty segment) in the order they were added."""

    def __init__(self) -> None:
        self._literal: dict[str, dict[str, Handler]] = {}
        self._templates: dict[str, tuple[re.Pattern[str], dict[str, Handler]]] = {}

    def add(self, method: str, template: str, handler: Handler) -> None:
        if _VARIABLE.search(template) is None:
            self._literal.setdefault(template, {})[method] = handler
            return
        if template not in self._templates:
            pattern = "".join(
                f"(?P<{piece}>[^{{}}/]+)" if i % 2 else re.escape(piece)
                for i, piece in enumerate(_VARIABLE.split(template))
            )
            self._templates[template] = (re.compile(pattern), {})
        self._templates[template][1][method] = handler

    def resolve(self, method: str, path: str) -> tuple[Handler, Mapping[str, str]]:
        allowed: set[str] = set()
        methods = self._literal.get(path)
        if methods is not None:
            if method in methods:
                return methods[method], {}
            allowed.update(methods)
        for pattern, methods in self._templates.values():
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method in methods:
                return methods[method], {k: _unquote(v) for k, v in match.groupdict().items()}
            allowed.update(methods)
        if allowed:
            raise _MethodNotAllowed(allowed)
        raise _NotFound


class EdgeHandler:
    """The one request handler: assigns the request id, routes, calls, and renders every
    failure as the OpenAI envelope carrying that id.

    Calls go through ``channel``: to ``config.grpc_target`` over a channel the `EdgeServer`
    opens, or the server's in-process channel under ``tunegate run``. Raises RouteError at
    construction if an annotation cannot be served."""

    def __init__(self, config: EdgeConfig, channel: grpc.aio.Channel) -> None:
        self.config = config
        self.channel = channel
        self._table = _Table()
        self._table.add("GET", "/healthz", self._healthz)
        self._table.add("HEAD", "/healthz", self._healthz)
        for route in build_routes():
            handler = self._unary(route) if route.cardinality is Cardinality.UNARY else self._streaming(route)
            self._table.add(route.verb, route.path, handler)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        request_id = request_id_from(request.headers)
        allow = None
        try:
            handler, params = self._table.resolve(request.method, request.rel_url.path_safe)
            response = await handler(request, params, request_id)
        except ErrorAnswer as answer:
            error = answer.error
        except CodecError as exc:
            error = error_response(400, exc.message, param=exc.param)
        except _NotFound:
            error = error_response(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")
        except _MethodNotAllowed as exc:
            where = f"{request.method} {request.path}"
            error = error_response(405, f"Method not allowed ({where})", code="method_not_allowed")
            allow = exc.allowed
        except web.HTTPRequestEntityTooLarge:
            error = error_response(413, "The request body is too large.", code="request_too_large")
        except web.HTTPException as exc:
            error = error_response(exc.status, exc.reason)
        except ConnectionError:
            # The client went away mid-request; nobody will read an answer.
            logger.debug("request %s: client disconnected", request_id)
            error = error_response(499, "Client closed the request.")
        except Exception:
            logger.exception("request %s: unhandled error", request_id)
            error = error_response(500, "The gateway failed to handle the request.")
        else:
            if not response.prepared:
                response.headers[REQUEST_ID] = request_id
            return response
        response = error_json(error, request_id)
        if allow is not None:
            response.headers["Allow"] = allow
        return response

    def _unary(self, route: Route) -> Handler:
        async def handle(
            request: web.BaseRequest, params: Mapping[str, str], request_id: str
        ) -> web.StreamResponse:
            ctx = call_context(request, request_id)
            message = await request_message(request, route, params)
            rpc = self.channel.unary_unary(
                route.method_path,
                request_serializer=route.request_cls.SerializeToString,
                response_deserializer=route.response_cls.FromString,
            )
            try:
                result = await rpc(message, metadata=ctx.metadata, timeout=self.config.unary_timeout)
            except grpc.aio.AioRpcError as err:
                raise ErrorAnswer(rpc_error(err)) from None
            return ok_json(to_openai(result))

        return handle

    def _streaming(self, route: Route) -> Handler:
        stream = handle_upload if route.cardinality is Cardinality.CLIENT_STREAMING else handle_download

        async def handle(
            request: web.BaseRequest, params: Mapping[str, str], request_id: str
        ) -> web.StreamResponse:
            ctx = call_context(request, request_id)
            return await stream(request, route, params, self.channel, self.config, ctx)

        return handle

    async def _healthz(
        self, _request: web.BaseRequest, _params: Mapping[str, str], _request_id: str
    ) -> web.StreamResponse:
        """``GET /healthz``: the gRPC server's overall health (``grpc.health.v1.Health/Check``)."""
        check = self.channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        timeout = min(self.config.unary_timeout, 5.0)
        try:
            reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            return web.json_response({"status": "NOT_SERVING", "detail": err.code().name}, status=503)
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return web.json_response({"status": name}, status=200 if name == "SERVING" else 503)


class EdgeServer:
    """A running edge: aiohttp's low-level server bound to ``config.host:config.port``.

    Start and stop it on one event loop (its gRPC channel belongs to that loop).
    """

    def __init__(
        self, runner: web.ServerRunner, config: EdgeConfig, port: int, owned: grpc.aio.Channel | None
    ) -> None:
        self._runner = runner
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
            runner = web.ServerRunner(web.Server(handler, access_log=None), handle_signals=False)
            await runner.setup()
            try:
                site = web.TCPSite(runner, config.host, config.port)
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            if owned is not None:
                await owned.close(grace=None)
            raise
        port = int(runner.addresses[0][1])
        return cls(runner, config, port, owned)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (aiohttp's graceful shutdown), close."""
        try:
            await self._runner.cleanup()
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
