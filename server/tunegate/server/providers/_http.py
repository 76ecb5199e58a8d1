"""The control-plane HTTP client of the provider adapters: httpx, with timeouts, bounded
retries and the gateway's errors.

Every adapter owns one `HttpClient`, which owns one pooled `httpx.AsyncClient` shared by every
request and account the adapter serves (the pool keeps connections per origin): files, jobs,
models — everything but the chat relay. Chat completions, the gateway's hot path, go through
the adapter's `tunegate.server.providers._chat.ChatClient` (one pooled `aiohttp.ClientSession`)
instead: on the loopback fake (`bench/chat_provider_cpu.py`) a chat POST through this client
costs 1.5-1.8 ms CPU at c=1 and 2.1-3.0 ms at c=16, through the aiohttp relay 0.36 and
0.43 ms, and a streamed event 110-160 against 42-67 µs (the `_chat` docstring has the table).
The chat client shares this module's settings, backoff (`retry_delay`) and error mapping
(`error_for_answer`, `unreachable`, `read_timed_out`, `connection_failed`). The pool is built
with:

- explicit connect/read/write/pool timeouts (`HttpSettings.timeout`), so no call waits forever;
- `trust_env=True` (`HttpSettings.trust_env`): `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
  `NO_PROXY`, and `SSL_CERT_FILE` / `SSL_CERT_DIR`, are read from the environment when the
  client is built;
- HTTP/2 offered over TLS (`HttpSettings.http2`; ALPN picks it when the provider speaks it,
  HTTP/1.1 otherwise; `h2` comes with `httpx[http2]`). Plain `http://` is HTTP/1.1;
- redirects never followed: a provider API does not redirect, and following one could carry
  the credential headers to another host.

Calls:

- `request` / `request_json`: the answer's body is read whole (JSON control-plane answers);
- `stream` (an async context manager) or `open_stream` + `body_chunks`: the answer's head is
  checked like any other answer, then its body is iterated chunk by chunk in bounded memory
  (file content; chat streams);
- a request body is bytes, JSON, or an async iterator of byte chunks sent as they come (with
  the caller's `Content-Length` when it gives one, else chunked on HTTP/1.1).

Contract:

- only idempotent requests are retried: GET, HEAD, PUT, DELETE, OPTIONS by method, a POST only
  when the caller passes `idempotent=True` — a paid POST (create job) is never sent twice by
  this layer; a body given as an async iterator is never retried, because it cannot be replayed.
  A paid POST that was never sent (`ProviderUnreachable`) is retried when the caller passes
  `retry_unsent=True` (chat completions);
- retried failures: connection errors, timeouts, HTTP 429/500/502/503/504; at most
  `max_retries` retries, exponential backoff with full jitter, or the provider's
  `retry-after-ms` / `Retry-After` (seconds or HTTP date) when it sends one. A hint longer than
  `retry_after_max_seconds` is not waited out: the error is raised at once, carrying the hint;
- a 2xx answer is returned; anything else raises a `tunegate.server.errors.TunegateError`:
  a 4xx keeps its status, message, code and param (`error_for_http_status`), a 5xx — or a
  redirect (3xx) — becomes a retryable 502 `UpstreamError`, a timeout a `DeadlineExceeded`
  (504), a broken connection an `UpstreamError` — while a streamed body is read too; a failure
  to reach the provider at all (DNS, connect refused or timed out, TLS handshake, no free
  pooled connection) is a `ProviderUnreachable` (an `UpstreamError` saying the request was never sent);
- `no_retries()` (a context manager) turns guessed retries off for the calls made inside it: a
  read that has a stored answer to fall back on asks the provider once, and again only when the
  provider answered with a `Retry-After` hint (it is up and said when to come back).

Credentials travel in headers only; they are never logged and never put into error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from tunegate.server.errors import (
    DeadlineExceeded,
    ProviderUnreachable,
    TunegateError,
    UpstreamError,
    error_for_http_status,
)

__all__ = [
    "Endpoint",
    "HttpClient",
    "HttpSettings",
    "Sleep",
    "no_retries",
    "retries_enabled",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
"""How the client waits between attempts (`asyncio.sleep`; tests inject a recorder)."""

Body = bytes | AsyncIterator[bytes]
"""A request body: bytes, or chunks sent as they come (never held whole, never retried)."""

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_USER_AGENT = "tunegate"
_RETRIES = contextvars.ContextVar("tunegate_provider_retries", default=True)


@contextlib.contextmanager
def no_retries() -> Iterator[None]:
    """Calls to providers made inside this block (in this task) are not retried without the
    provider's own `Retry-After` hint."""
    token = _RETRIES.set(False)
    try:
        yield
    finally:
        _RETRIES.reset(token)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Timeouts, retry policy, pool size and transport options for calls to providers
    (validated when built)."""

    timeout_seconds: float = 60.0
    """Read, write and pool timeout of each attempt: the longest wait for the provider to accept
    more of a request, send more of an answer, or for a free pooled connection."""
    connect_timeout_seconds: float = 5.0
    chat_timeout_seconds: float = 600.0
    """Read timeout of a chat completion: the longest wait for its head or next bytes (a
    reasoning model may think for minutes before it answers; OpenAI's SDK waits 600 s)."""
    max_retries: int = 2
    """Retries after the first attempt (idempotent requests only)."""
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    retry_after_max_seconds: float = 30.0
    """The longest provider `Retry-After` hint the client waits out before retrying."""
    max_connections: int = 100
    max_keepalive_connections: int = 100
    """Idle connections kept: as many as may be busy at once, so a burst of calls does not
    close and reopen connections."""
    http2: bool = True
    """Offer HTTP/2 over TLS (ALPN); the provider's choice wins."""
    trust_env: bool = True
    """Read proxies (`HTTPS_PROXY`, `NO_PROXY`, …) and CA bundles (`SSL_CERT_FILE`) from the
    environment."""

    def __post_init__(self) -> None:
        for name in (
            "timeout_seconds",
            "connect_timeout_seconds",
            "chat_timeout_seconds",
            "retry_after_max_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpSettings.{name} must be > 0")
        if self.max_retries < 0:
            raise ValueError("HttpSettings.max_retries must be >= 0")
        if not 0 <= self.backoff_base_seconds <= self.backoff_max_seconds:
            raise ValueError("HttpSettings needs 0 <= backoff_base_seconds <= backoff_max_seconds")
        if self.max_connections < 1 or not 0 <= self.max_keepalive_connections <= self.max_connections:
            raise ValueError("HttpSettings needs 1 <= max_connections and keep-alive <= max_connections")

    def timeout(self) -> httpx.Timeout:
        t = self.timeout_seconds
        return httpx.Timeout(connect=self.connect_timeout_seconds, read=t, write=t, pool=t)

    def limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections, max_keepalive_connections=self.max_keepalive_connections
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one account's API lives: a base URL (no trailing slash), the headers of every call
    (auth included — hence no `repr`) and the query parameters of every call (`api-version`)."""

    base_url: str
    headers: Mapping[str, str]
    params: Mapping[str, str]

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r})"


class HttpClient:
    """One provider's outbound HTTP, with the module's retry and error contract.

    `provider` names the provider in error messages. `transport` replaces the network (unit
    tests of retries and error mapping use `httpx.MockTransport`); `sleep` and `jitter`
    (uniform in [0, 1)) are injectable so tests neither wait nor depend on chance.
    """

    def __init__(
        self,
        provider: str,
        settings: HttpSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.provider = provider
        self.settings = settings = settings or HttpSettings()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._jitter: Callable[[], float] = jitter or random.random
        self.client = httpx.AsyncClient(
            transport=transport,
            http2=settings.http2,
            trust_env=settings.trust_env,
            timeout=settings.timeout(),
            limits=settings.limits(),
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT},
        )
        """The pooled `httpx.AsyncClient` (one per adapter)."""

    async def aclose(self) -> None:
        """Closes the pool's connections."""
        await self.client.aclose()

    async def request(
        self,
        method: str,
        endpoint: Endpoint,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: Body | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        retry_unsent: bool = False,
        read_timeout: float | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Sends `method {endpoint.base_url}{path}` and returns the 2xx response, body read —
        or, with `stream`, as soon as its head has arrived (see `open_stream`).

        `params` with a None value are left out. `retry_unsent` lets a request that is otherwise
        never retried (a paid POST) be retried when it was never sent (`ProviderUnreachable`);
        its `content` must then be bytes. `read_timeout` replaces the settings' read timeout for
        this request (a chat answer may think for minutes). Raises a `TunegateError` as described
        in the module docstring; exceptions raised by a streaming `content` iterator propagate
        unchanged.
        """
        method = method.upper()
        retryable = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        replayable = content is None or isinstance(content, bytes)
        if content is not None and not isinstance(content, bytes):
            retryable = False
        all_headers = {**endpoint.headers, **(headers or {})}
        if json is not None:
            content = orjson.dumps(json)
            all_headers.setdefault("Content-Type", "application/json")
        query = {k: v for k, v in {**endpoint.params, **(params or {})}.items() if v is not None}
        extra: dict[str, Any] = {}
        if read_timeout is not None:
            t = self.settings.timeout_seconds
            connect = self.settings.connect_timeout_seconds
            extra["timeout"] = httpx.Timeout(connect=connect, read=read_timeout, write=t, pool=t)
        request = self.client.build_request(
            method,
            endpoint.base_url + path,
            # None keeps a query already in the URL (a signed upload URL); `{}` would drop it.
            params=query or None,
            content=content,
            headers=all_headers,
            **extra,
        )
        attempt = 0
        while True:
            hint: float | None = None
            try:
                response = await self.client.send(request, stream=stream)
                if stream and not response.is_success:
                    try:  # an error answer is small: read it to make the error, then release it
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.RequestError as exc:
                error = self._transport_error(exc)
                cause: BaseException = exc
            else:
                if response.is_success:
                    return response
                error = self.error_for_answer(
                    response.status_code, response.headers, response.content, reason=response.reason_phrase
                )
                hint = retry_after_seconds(response.headers)
                if response.status_code not in _RETRY_STATUSES:
                    raise error
                cause = error
            delay = self.retry_delay(attempt, hint)
            unhinted = hint is None and not retries_enabled()
            unsent = retry_unsent and replayable and isinstance(error, ProviderUnreachable)
            if not (retryable or unsent) or unhinted or attempt >= self.settings.max_retries or delay is None:
                raise error from (None if cause is error else cause)
            log.info(
                "%s %s failed (%s); retry %d/%d in %.2f s",
                method,
                path,
                error.code,
                attempt + 1,
                self.settings.max_retries,
                delay,
            )
            await self._sleep(delay)
            attempt += 1

    async def request_json(self, method: str, endpoint: Endpoint, path: str, **kwargs: Any) -> dict[str, Any]:
        """`request`, then the body as a JSON object (a non-object answer is an `UpstreamError`)."""
        response = await self.request(method, endpoint, path, **kwargs)
        body = _json(response)
        if not isinstance(body, dict):
            raise UpstreamError(
                f"The '{self.provider}' provider answered {path} with a non-JSON-object body."
            )
        return body

    async def open_stream(self, method: str, endpoint: Endpoint, path: str, **kwargs: Any) -> httpx.Response:
        """`request(..., stream=True)`: returns once a 2xx answer's head has arrived, its body
        unread. Retries and errors are `request`'s (an error answer's body is read to make the
        error). The caller owns the response: read it with `body_chunks` (which closes it) or
        close it with `aclose()`; an unclosed response holds its connection."""
        return await self.request(method, endpoint, path, stream=True, **kwargs)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, endpoint: Endpoint, path: str, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """`open_stream` as an async context manager that closes the response on exit:

        async with http.stream("GET", endpoint, "/files/x/content") as response:
            async for chunk in http.body_chunks(response):
                ...
        """
        response = await self.open_stream(method, endpoint, path, **kwargs)
        try:
            yield response
        finally:
            await response.aclose()

    async def body_chunks(
        self, response: httpx.Response, chunk_size: int | None = None
    ) -> AsyncIterator[bytes]:
        """The (decoded) body of a streamed `response`, as it arrives, in chunks of at most
        `chunk_size` bytes (as received when None). A read timeout or a broken connection raises
        the module's errors. The response is closed when the body ends, fails or is abandoned."""
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        except httpx.RequestError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()

    def _transport_error(self, exc: httpx.RequestError) -> TunegateError:
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            # Nothing reached the provider: a connection failure, not a slow answer.
            return self.unreachable("timed out")
        if isinstance(exc, httpx.ConnectError):  # DNS, refused, TLS handshake: nothing was sent
            return self.unreachable(type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return self.read_timed_out(self.settings.timeout_seconds)
        return self.connection_failed(type(exc).__name__)

    async def sleep(self, seconds: float) -> None:
        """Waits between attempts (the injected `sleep`)."""
        await self._sleep(seconds)

    def retry_delay(self, attempt: int, hint: float | None) -> float | None:
        """Seconds to wait before retry `attempt + 1`, or None when a hint is too long to wait."""
        if hint is not None:
            return hint if hint <= self.settings.retry_after_max_seconds else None
        ceiling = min(self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2.0**attempt)
        return self._jitter() * ceiling  # "full jitter": spreads retries of many clients apart

    def error_for_answer(
        self, status: int, headers: Mapping[str, str], body: bytes, *, reason: str = ""
    ) -> TunegateError:
        """The error for a non-2xx answer — its status, headers and (whole, decoded) body — from
        OpenAI's, Azure's dated or Azure's v1 error body, with `retry_after` from the answer's
        `retry-after-ms` / `Retry-After`. Every client of the adapters (this one and the chat
        relay's) maps answers through it."""
        if status < 400:  # a redirect (never followed) or another answer that is not an error
            unexpected = UpstreamError(
                f"The '{self.provider}' provider answered HTTP {status} {reason}".rstrip()
                + " instead of a result (redirects are not followed)."
            )
            unexpected.provider = self.provider
            return unexpected
        fields = _error_fields(body)
        message = fields.get("message") or f"HTTP {status} {reason}".rstrip()
        if status >= 500:
            message = f"The '{self.provider}' provider failed: {message}"
        error = error_for_http_status(
            status,
            message,
            code=fields.get("code"),
            param=fields.get("param"),
            type=fields.get("type"),
            retry_after=retry_after_seconds(headers),
        )
        error.provider = self.provider
        return error

    def unreachable(self, why: str) -> TunegateError:
        """`ProviderUnreachable`: nothing reached the provider (`why`: the failure's kind)."""
        error = ProviderUnreachable(f"Could not connect to the '{self.provider}' provider ({why}).")
        error.provider = self.provider
        return error

    def read_timed_out(self, seconds: float) -> TunegateError:
        """`DeadlineExceeded` (504): the provider sent nothing more for `seconds`."""
        error = DeadlineExceeded(
            f"The '{self.provider}' provider did not answer in time ({seconds:g} s).", http_status=504
        )
        error.provider = self.provider
        return error

    def connection_failed(self, why: str) -> TunegateError:
        """`UpstreamError`: the connection broke after the request may have been sent."""
        error = UpstreamError(f"The connection to the '{self.provider}' provider failed ({why}).")
        error.provider = self.provider
        return error


def retries_enabled() -> bool:
    """False inside `no_retries()`: then only a provider's own `Retry-After` hint is retried."""
    return _RETRIES.get()


def _json(response: httpx.Response) -> Any:
    """The body as JSON, or None when it is not JSON."""
    return _loads(response.content)


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _error_fields(body: bytes) -> dict[str, str]:
    """message/code/param/type from `{"error": {...}}` (OpenAI: message, type, param, code;
    Azure dated: code, message, target, innererror; Azure v1: code, message, param, type)."""
    parsed = _loads(body)
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return {"message": error}
    if not isinstance(error, dict):
        return {}
    fields: dict[str, str] = {}
    for key in ("message", "code", "param", "type"):
        value = error.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            fields[key] = str(value)
    target = error.get("target")
    if "param" not in fields and isinstance(target, str) and target:
        fields["param"] = target
    # Azure v1 sends `"type": "error"`, which says nothing; the edge's per-status default is better.
    if fields.get("type") == "error":
        del fields["type"]
    return fields


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The provider's retry hint in seconds: `retry-after-ms`, else `Retry-After` as seconds or
    an HTTP date; None when absent or unreadable. Never negative."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = -1.0
        if value >= 0 and value != float("inf"):
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):  # NaN or infinite
        return None
    return max(0.0, seconds)
