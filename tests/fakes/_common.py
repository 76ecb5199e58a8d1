"""What every provider fake shares: recording, violations, fault injection, the clock, runners.

Theory of operation. A fake is an aiohttp application bound to 127.0.0.1. One middleware wraps
every provider route (not the ``/_fake/…`` control routes) and, in order:

1. records the request (:class:`RecordedRequest`: method, path, query, headers with credential
   values redacted, JSON body; multipart handlers add the form fields and the file's size);
2. consumes a matching :class:`Fault`, if one is armed for (method, path regex) — ``500``/``503``
   answer a provider-shaped server error, ``429`` a rate-limit error with ``Retry-After``,
   ``timeout`` sleeps ``delay`` seconds and then drops the connection (the operation is *not*
   performed), ``disconnect`` drops it at once, ``drop_after_create`` runs the handler (the
   operation *is* performed) and then drops the connection without a response, ``slow`` sleeps
   ``delay`` seconds and then performs the operation and answers (a client that gave up earlier
   never hears of it);
3. runs the handler; an :class:`ApiError` it raises becomes the provider's error envelope, and when
   the error says the request broke the provider's contract (``violation=True``) it is appended to
   ``fake.violations`` too — so a test ends with ``assert fake.violations == []``.

Responses are validated against the provider's schema before they leave (see ``FakeServer.emit``); a
response that does not fit is a bug in the fake: it is recorded as a violation and answered 500.

Control routes for a gateway running in another process (JSON in, JSON out, no auth):
``POST /_fake/faults`` (one fault object or a list; ``DELETE`` clears), ``POST /_fake/advance``
``{"job_id", "to"?, "steps"?}``, ``POST /_fake/config`` ``{"steps_per_get"}``, ``GET /_fake/state``
(requests, violations, job count), ``POST /_fake/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

from aiohttp import web

__all__ = [
    "RECORD",
    "ApiError",
    "Clock",
    "FakeServer",
    "Fault",
    "FaultKind",
    "RecordedRequest",
    "Violation",
    "new_id",
    "run_cli",
]

FaultKind = Literal["500", "503", "429", "timeout", "disconnect", "drop_after_create", "slow"]
_FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
_SECRET_HEADERS = frozenset({"authorization", "api-key"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
F = TypeVar("F", bound="FakeServer")


def new_id(prefix: str) -> str:
    """An id in the provider's style: ``file-…``, ``ftjob-…``, ``ftevent-…``, ``ftckpt_…``."""
    return prefix + secrets.token_hex(12)


@dataclass(frozen=True)
class Violation:
    """A request that broke the provider's contract (or a response from the fake that did)."""

    method: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}: {self.reason}"


@dataclass
class RecordedRequest:
    """One request as the provider saw it. Credential header values are replaced by ``"***"``."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    file_bytes: int | None = None
    status: int | None = None
    at: float = field(default_factory=time.monotonic)
    """When it arrived (`time.monotonic()`)."""


RECORD = web.RequestKey("record", RecordedRequest)
"""Where a handler finds the request's :class:`RecordedRequest` (to add the parsed body)."""


@dataclass
class Fault:
    """The next ``times`` requests matching ``method`` (``"*"`` = any) and ``path`` (a regex searched
    in the request path) fail as ``kind``. ``retry_after`` is the ``429`` header in seconds;
    ``delay`` is how long ``timeout`` waits before dropping the connection, and ``slow`` before
    it performs the request."""

    kind: FaultKind
    path: str = ".*"
    method: str = "*"
    times: int = 1
    retry_after: int = 1
    delay: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {_FAULT_KINDS}, not {self.kind!r}")
        if self.times < 1:
            raise ValueError("times must be >= 1")
        re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method) and re.search(
            self.path, path
        ) is not None


class ApiError(Exception):
    """A provider error answer. ``violation`` marks requests a correct gateway never sends (bad
    schema, missing auth, unknown file): they are also recorded in ``fake.violations``. State
    conflicts and not-found answers are ordinary provider behaviour, not violations."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
        violation: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.violation = violation
        self.headers = headers or {}


class Clock:
    """Unix seconds, shiftable: ``now()`` is wall time plus ``offset`` (``shift(3600)`` jumps ahead)."""

    def __init__(self) -> None:
        self.offset = 0

    def now(self) -> int:
        return int(time.time()) + self.offset

    def shift(self, seconds: int) -> None:
        self.offset += seconds


class FakeServer:
    """Base of the provider fakes: lifecycle, recording, faults, control routes.

    Subclasses implement :meth:`add_routes`, :meth:`render_error` (the provider's error envelope)
    and :meth:`advance` (job progression), and call :meth:`emit` to send validated JSON.
    """

    request_id_header = "x-request-id"

    def __init__(self, *, steps_per_get: int = 1) -> None:
        self.steps_per_get = steps_per_get
        self.requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.faults: list[Fault] = []
        self.clock = Clock()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._tmp = tempfile.TemporaryDirectory(prefix="tunegate-fake-")
        self._counter = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- to implement --------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def render_error(self, request: web.Request, error: ApiError) -> web.Response:
        raise NotImplementedError

    def advance(self, job_id: str, to: str | None = None, steps: int = 1) -> str:
        """Move a job ``steps`` transitions on (or until it reaches ``to``); returns its status."""
        raise NotImplementedError

    def job_count(self) -> int:
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**4)
        control = [
            web.post("/_fake/faults", self._set_faults),
            web.delete("/_fake/faults", self._clear_faults),
            web.post("/_fake/advance", self._advance_route),
            web.post("/_fake/config", self._config_route),
            web.get("/_fake/state", self._state_route),
            web.post("/_fake/reset", self._reset_route),
        ]
        app.add_routes(control)
        self.add_routes(app)
        return app

    async def start(self, port: int = 0) -> None:
        """Serve on 127.0.0.1:``port`` (0 = a free port, then in ``self.port``)."""
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = cast(asyncio.base_events.Server, site._server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._tmp.cleanup()

    def start_in_thread(self: F, port: int = 0) -> F:
        """Serve from a daemon thread with its own event loop (for synchronous tests and SDKs);
        ``close()`` stops it. Python-API calls are then run on that loop, so state stays
        single-threaded."""
        loop = asyncio.new_event_loop()
        ready: Future[None] = Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(port))
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        self._loop = loop
        return self

    def close(self) -> None:
        """Stop a fake started with :meth:`start_in_thread`."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop = None

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the fake's loop when thread-hosted (else inline) and return its result."""
        loop = self._loop
        if loop is None or self._thread is threading.current_thread():
            return fn()

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    # -- test-facing API -----------------------------------------------------------------------
    def inject(
        self,
        kind: FaultKind,
        path: str = ".*",
        *,
        method: str = "*",
        times: int = 1,
        retry_after: int = 1,
        delay: float = 30.0,
    ) -> Fault:
        """Arm a fault: the next ``times`` requests matching (method, path regex) get ``kind``."""
        fault = Fault(kind, path, method, times, retry_after, delay)
        self.call(lambda: self.faults.append(fault))
        return fault

    def reset(self) -> None:
        """Forget recorded requests, violations and armed faults (objects are kept)."""

        def run() -> None:
            self.requests.clear()
            self.violations.clear()
            self.faults.clear()

        self.call(run)

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and re.search(path_regex, r.path)]

    def temp_path(self) -> Path:
        return Path(self._tmp.name) / f"blob-{next(self._counter)}"

    def violation(self, request: web.Request, reason: str) -> None:
        self.violations.append(Violation(request.method, request.path, reason))

    def emit(
        self,
        request: web.Request,
        body: Any,
        check: Callable[[Any], None],
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """Send ``body`` as JSON after ``check`` (a schema validator) accepted it. A rejection is a
        bug in the fake: recorded as a violation, then raised (the middleware answers 500)."""
        try:
            check(body)
        except Exception as exc:
            reason = f"fake emitted an invalid response: {getattr(exc, 'message', exc)}"
            self.violation(request, reason)
            raise AssertionError(reason) from exc
        return web.json_response(body, status=status, headers=headers)

    async def hold(self, request: web.Request) -> bool:
        """Waits until the client closes ``request``'s connection (True) or the fake stops
        (False): a streamed answer that stalls, so a test can close it early."""
        while not self._stopping.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return True
            await asyncio.sleep(0.01)
        return False

    # -- middleware ----------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            return await handler(request)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=list(request.query.items()),
            headers={
                k.lower(): ("***" if k.lower() in _SECRET_HEADERS else v) for k, v in request.headers.items()
            },
        )
        self.requests.append(record)
        request[RECORD] = record
        response = await self._dispatch(request, handler, record)
        record.status = response.status
        response.headers.setdefault(self.request_id_header, new_id("req_"))
        return response

    async def _dispatch(
        self, request: web.Request, handler: Handler, record: RecordedRequest
    ) -> web.StreamResponse:
        fault = self._take_fault(request)
        if fault is not None and fault.kind in ("500", "503"):
            return self.render_error(
                request, ApiError(int(fault.kind), "The server had an error (injected).", type="server_error")
            )
        if fault is not None and fault.kind == "429":
            error = ApiError(
                429,
                "Rate limit reached (injected).",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(fault.retry_after)},
            )
            return self.render_error(request, error)
        if fault is not None and fault.kind in ("timeout", "disconnect"):
            if fault.kind == "timeout":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), fault.delay)
            return self._drop(request)
        try:
            if request.content_type == "application/json" and request.can_read_body:
                record.json = await self._read_json(request)
            if fault is not None and fault.kind == "slow":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), fault.delay)
            response = await handler(request)
        except ApiError as error:
            if error.violation:
                self.violation(request, error.message)
            return self.render_error(request, error)
        except web.HTTPException as exc:
            if exc.status == 404:
                unknown = ApiError(404, f"Unknown path {request.method} {request.path}", violation=True)
                self.violation(request, unknown.message)
                return self.render_error(request, unknown)
            if exc.status == 405:
                self.violation(request, f"method {request.method} not allowed on {request.path}")
            raise
        if fault is not None and fault.kind == "drop_after_create":
            return self._drop(request)
        return response

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.matches(request.method, request.path):
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        # Abort the socket; the response returned afterwards is never written (the client sees
        # "server disconnected without sending a response").
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)

    @staticmethod
    async def _read_json(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"Request body is not valid JSON: {exc}", violation=True) from exc

    # -- control routes ------------------------------------------------------------------------
    async def _set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        items = body if isinstance(body, list) else [body]
        try:
            faults = [Fault(**item) for item in items]
        except (TypeError, ValueError, re.error) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.faults.extend(faults)
        return web.json_response({"armed": [asdict(f) for f in faults]})

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"armed": []})

    async def _advance_route(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            status = self.advance(str(body["job_id"]), body.get("to"), int(body.get("steps", 1)))
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"job_id": body["job_id"], "status": status})

    async def _config_route(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "steps_per_get" in body:
            self.steps_per_get = int(body["steps_per_get"])
        return web.json_response({"steps_per_get": self.steps_per_get})

    async def _state_route(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [asdict(r) for r in self.requests],
                "violations": [str(v) for v in self.violations],
                "jobs": self.job_count(),
            }
        )

    async def _reset_route(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


def run_cli(
    make: Callable[[], FakeServer], describe: Callable[[FakeServer], str], argv: Iterable[str] | None
) -> None:
    """``python -m tests.fakes.<fake> --port N``: serve until SIGINT/SIGTERM. Prints one line,
    ``listening <base url>``, once the port is bound (so ``--port 0`` callers can read it)."""
    parser = argparse.ArgumentParser(description=(make.__doc__ or "").strip() or None)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--steps-per-get", type=int, default=1, help="job transitions per GET of a job")
    args = parser.parse_args(list(argv) if argv is not None else None)

    async def serve() -> None:
        fake = make()
        fake.steps_per_get = args.steps_per_get
        await fake.start(args.port)
        print("listening", describe(fake), flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await fake.stop()

    asyncio.run(serve())
