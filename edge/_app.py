"""The aiohttp application: routes from ``_routes``, one generic unary handler, two streaming
handlers chosen by cardinality, health, and the middleware that makes every answer — success
or error, routed or not — carry ``x-request-id`` and the one error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2
from tunegate.openai_json import CodecError, apply_headers, from_openai, from_query, to_openai

from edge._config import EdgeConfig, channel_options
from edge._download import handle_download
from edge._errors import ErrorResponse, error_response
from edge._headers import REQUEST_ID, request_id_from
from edge._http import (
    CHANNEL_KEY,
    CONFIG_KEY,
    REQUEST_ID_KEY,
    ErrorAnswer,
    call_context,
    error_json,
    json_body,
    ok_json,
    rpc_error,
)
from edge._routes import Cardinality, Route, build_routes
from edge._upload import handle_upload

__all__ = ["EdgeServer", "build_app", "serve"]

logger = logging.getLogger("tunegate.edge")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@web.middleware
async def _edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Assign the request id; render every failure as the OpenAI envelope; echo the id."""
    request_id = request_id_from(request.headers)
    request[REQUEST_ID_KEY] = request_id
    try:
        response = await handler(request)
    except ErrorAnswer as answer:
        response = error_json(answer.error, request_id)
    except CodecError as exc:
        response = error_json(error_response(400, exc.message, param=exc.param), request_id)
    except web.HTTPException as exc:
        response = error_json(_http_exception_error(request, exc), request_id)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except ConnectionError:
        # The client went away mid-request; nobody will read an answer.
        logger.debug("request %s: client disconnected", request_id)
        response = error_json(error_response(499, "Client closed the request."), request_id)
    except Exception:
        logger.exception("request %s: unhandled error", request_id)
        response = error_json(error_response(500, "The gateway failed to handle the request."), request_id)
    if not response.prepared:
        response.headers[REQUEST_ID] = request_id
    return response


def _http_exception_error(request: web.Request, exc: web.HTTPException) -> ErrorResponse:
    where = f"{request.method} {request.path}"
    if isinstance(exc, web.HTTPNotFound):
        return error_response(404, f"Invalid URL ({where})", code="unknown_url")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return error_response(405, f"Method not allowed ({where})", code="method_not_allowed")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(413, "The request body is too large.", code="request_too_large")
    return error_response(exc.status, exc.reason)


def _unary(route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = call_context(request)
        config = request.app[CONFIG_KEY]
        if route.body == "*":
            body = json_body(await request.read())
            message = from_openai(
                body, route.request_cls, path_params=request.match_info, headers=request.headers
            )
        else:
            message = from_query(request.query, route.request_cls, path_params=request.match_info)
            apply_headers(message, request.headers)
        rpc = request.app[CHANNEL_KEY].unary_unary(
            route.method_path,
            request_serializer=route.request_cls.SerializeToString,
            response_deserializer=route.response_cls.FromString,
        )
        try:
            result = await rpc(message, metadata=ctx.metadata, timeout=config.unary_timeout)
        except grpc.aio.AioRpcError as err:
            raise ErrorAnswer(rpc_error(err)) from None
        return ok_json(to_openai(result))

    return handle


def _streaming(route: Route) -> Handler:
    stream = handle_upload if route.cardinality is Cardinality.CLIENT_STREAMING else handle_download

    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app
        return await stream(request, route, app[CHANNEL_KEY], app[CONFIG_KEY], call_context(request))

    return handle


async def _healthz(request: web.Request) -> web.StreamResponse:
    """``GET /healthz``: the gRPC server's overall health (``grpc.health.v1.Health/Check``)."""
    check = request.app[CHANNEL_KEY].unary_unary(
        _HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    timeout = min(request.app[CONFIG_KEY].unary_timeout, 5.0)
    try:
        reply = await check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError as err:
        return web.json_response({"status": "NOT_SERVING", "detail": err.code().name}, status=503)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return web.json_response({"status": name}, status=200 if name == "SERVING" else 503)


async def _channel_ctx(app: web.Application) -> AsyncIterator[None]:
    # One channel per process, created inside the running loop (grpc.aio objects are bound to
    # the loop that made them) and closed when the app stops.
    config = app[CONFIG_KEY]
    channel = grpc.aio.insecure_channel(config.grpc_target, options=channel_options(config))
    app[CHANNEL_KEY] = channel
    try:
        yield
    finally:
        await channel.close(grace=None)


def build_app(config: EdgeConfig, channel: grpc.aio.Channel | None = None) -> web.Application:
    """The edge application for ``config``: every annotated RPC routed, plus ``/healthz``.

    Calls go to ``config.grpc_target`` over one channel the app opens and closes, or through
    ``channel`` when given (the server's in-process channel under ``tunegate run``; the caller
    owns it). Raises RouteError if an annotation cannot be served.
    """
    app = web.Application(middlewares=[_edge_middleware])
    app[CONFIG_KEY] = config
    if channel is None:
        app.cleanup_ctx.append(_channel_ctx)
    else:
        app[CHANNEL_KEY] = channel
    app.router.add_get("/healthz", _healthz)
    for route in build_routes():
        handler = _unary(route) if route.cardinality is Cardinality.UNARY else _streaming(route)
        app.router.add_route(route.verb, route.path, handler)
    return app


class EdgeServer:
    """A running edge: an aiohttp server bound to ``config.host:config.port``.

    Start and stop it on one event loop (its gRPC channel belongs to that loop).
    """

    def __init__(self, runner: web.AppRunner, config: EdgeConfig, port: int) -> None:
        self._runner = runner
        self.config = config
        self.port = port
        """The bound port (the real one when ``config.port`` is 0)."""

    @classmethod
    async def start(cls, config: EdgeConfig, channel: grpc.aio.Channel | None = None) -> EdgeServer:
        """Build the app (see `build_app` for ``channel``), bind, and start serving."""
        runner = web.AppRunner(build_app(config, channel), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        port = int(runner.addresses[0][1])
        return cls(runner, config, port)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (aiohttp's graceful shutdown), close."""
        await self._runner.cleanup()


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
