"""The one outbound HTTP client of the provider adapters: timeouts, bounded retries, errors.

Every adapter owns one `HttpClient`, so connections are reused across requests and accounts. On
the network it sends through one `Http1Pool` (`tunegate.server.providers._http1`: keep-alive HTTP/1.1 at a
fraction of aiohttp's and httpx's per-request CPU, which dominated a proxied call); with an
injected `httpx` transport (tests' `httpx.MockTransport`) it sends through `httpx.AsyncClient`.
Either way callers get a `ProviderResponse` (status, headers, body: what an adapter reads;
cheaper to make than an `httpx.Response`) and one contract.
Contract of `HttpClient.request`:

- every call has explicit connect/read/write/pool timeouts (`HttpSettings`);
- only idempotent requests are retried: GET, HEAD, PUT, DELETE by method, a POST only when the
  caller passes `idempotent=True` — a paid POST (create job) is never sent twice by this layer;
  a body given as an async iterator is never retried, because it cannot be replayed;
- retried failures: connection errors, timeouts, HTTP 429/500/502/503/504; at most
  `max_retries` retries, exponential backoff with full jitter, or the provider's
  `retry-after-ms` / `Retry-After` (seconds or HTTP date) when it sends one. A hint longer than
  `retry_after_max_seconds` is not waited out: the error is raised at once, carrying the hint;
- a 2xx answer is returned; anything else raises a `tunegate.server.errors.TunegateError`:
  a 4xx keeps its status, message, code and param (`error_for_http_status`), a 5xx becomes a
  retryable 502 `UpstreamError`, a timeout a `DeadlineExceeded` (504), a failure to connect or a
  broken connection an `UpstreamError`.

Credentials travel in headers only; they are never logged and never put into error messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from tunegate.server.errors import DeadlineExceeded, TunegateError, UpstreamError, error_for_http_status
from tunegate.server.providers._http1 import (
    ConnectTimeout,
    Http1Pool,
    ProviderResponse,
    ReadTimeout,
    TransportError,
)

__all__ = ["Endpoint", "HttpClient", "HttpSettings", "ProviderResponse", "Sleep"]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
"""How the client waits between attempts (`asyncio.sleep`; tests inject a recorder)."""

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Timeouts, retry policy and pool size for calls to providers (validated when built)."""

    timeout_seconds: float = 60.0
    """Read, write and pool timeout of each attempt."""
    connect_timeout_seconds: float = 5.0
    max_retries: int = 2
    """Retries after the first attempt (idempotent requests only)."""
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    retry_after_max_seconds: float = 30.0
    """The longest provider `Retry-After` hint the client waits out before retrying."""
    max_connections: int = 100
    max_keepalive_connections: int = 100
    """Idle connections kept per provider host: as many as may be busy at once, so a burst of
    calls does not close and reopen connections (20 cost ~40% more CPU per call at 64 calls)."""

    def __post_init__(self) -> None:
        for name in ("timeout_seconds", "connect_timeout_seconds", "retry_after_max_seconds"):
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

    `provider` names the provider in error messages. `transport` replaces the network (tests use
    `httpx.MockTransport`); `sleep` and `jitter` (uniform in [0, 1)) are injectable so tests
    neither wait nor depend on chance.
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
        self.settings = settings or HttpSettings()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._jitter: Callable[[], float] = jitter or random.random
        # Redirects are not followed: a provider API never redirects, and following one could
        # carry the credential headers somewhere else.
        self._client = (
            None
            if transport is None
            else httpx.AsyncClient(
                transport=transport,
                timeout=self.settings.timeout(),
                limits=self.settings.limits(),
                follow_redirects=False,
            )
        )
        self._pool: Http1Pool | None = None  # made on first use, inside the loop

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any],
        json: Any,
        content: bytes | AsyncIterator[bytes] | None,
        headers: Mapping[str, str],
    ) -> ProviderResponse:
        """One attempt. The pool's failures are re-raised as the matching httpx exceptions, so
        `request` maps both paths' errors the same way."""
        if self._client is not None:
            sent = await self._client.request(
                method, url, params=params, json=json, content=content, headers=headers
            )
            return ProviderResponse(sent.status_code, sent.headers, sent.content)
        if self._pool is None:
            settings = self.settings
            self._pool = Http1Pool(
                connect_timeout=settings.connect_timeout_seconds,
                read_timeout=settings.timeout_seconds,
                max_connections=settings.max_connections,
                max_idle_per_origin=settings.max_keepalive_connections,
            )
        send_headers = dict(headers)
        body = content
        if json is not None:
            body = orjson.dumps(json)
            send_headers.setdefault("Content-Type", "application/json")
        query = {key: _query_value(value) for key, value in params.items() if value is not None}
        if query:
            url = f"{url}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
        try:
            return await self._pool.request(method, url, send_headers, body)
        except ConnectTimeout as exc:
            raise httpx.ConnectTimeout(str(exc), request=httpx.Request(method, url)) from exc
        except ReadTimeout as exc:
            raise httpx.ReadTimeout(str(exc), request=httpx.Request(method, url)) from exc
        except TransportError as exc:
            raise httpx.ConnectError(str(exc), request=httpx.Request(method, url)) from exc

    async def request(
        self,
        method: str,
        endpoint: Endpoint,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> ProviderResponse:
        """Sends `method {endpoint.base_url}{path}` and returns the 2xx response (body read).

        Raises a `TunegateError` as described in the module docstring. Exceptions raised by a
        streaming `content` iterator propagate unchanged.
        """
        method = method.upper()
        retryable = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        if content is not None and not isinstance(content, bytes):
            retryable = False
        url = endpoint.base_url + path
        all_params = {**endpoint.params, **(params or {})}
        all_headers = {**endpoint.headers, **(headers or {})}
        attempt = 0
        while True:
            hint: float | None = None
            try:
                response = await self._send(
                    method, url, params=all_params, json=json, content=content, headers=all_headers
                )
            except httpx.ConnectTimeout as exc:
                # Nothing reached the provider: a connection failure, not a slow answer.
                error: TunegateError = UpstreamError(
                    f"Could not connect to the '{self.provider}' provider (timed out)."
                )
                cause: BaseException = exc
            except httpx.TimeoutException as exc:
                error = DeadlineExceeded(
                    f"The '{self.provider}' provider did not answer in time "
                    f"({self.settings.timeout_seconds:g} s).",
                    http_status=504,
                )
                cause = exc
            except httpx.TransportError as exc:
                error = UpstreamError(
                    f"The connection to the '{self.provider}' provider failed ({type(exc).__name__})."
                )
                cause = exc
            else:
                if response.is_success:
                    return response
                hint = retry_after_seconds(response.headers)
                error = self.error_from_response(response, retry_after=hint)
                if response.status_code not in _RETRY_STATUSES:
                    raise error
                cause = error
            delay = self._delay(attempt, hint)
            if not retryable or attempt >= self.settings.max_retries or delay is None:
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
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamError(
                f"The '{self.provider}' provider answered {path} with a non-JSON-object body."
            )
        return body

    def _delay(self, attempt: int, hint: float | None) -> float | None:
        """Seconds to wait before retry `attempt + 1`, or None when a hint is too long to wait."""
        if hint is not None:
            return hint if hint <= self.settings.retry_after_max_seconds else None
        ceiling = min(self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2.0**attempt)
        return self._jitter() * ceiling  # "full jitter": spreads retries of many clients apart

    def error_from_response(self, response: ProviderResponse, *, retry_after: float | None) -> TunegateError:
        """The error for a non-2xx answer, from OpenAI's, Azure's dated or Azure's v1 error body."""
        status = response.status_code
        fields = _error_fields(response)
        message = fields.get("message") or f"HTTP {status} {response.reason_phrase}".rstrip()
        if status >= 500:
            message = f"The '{self.provider}' provider failed: {message}"
        return error_for_http_status(
            status,
            message,
            code=fields.get("code"),
            param=fields.get("param"),
            type=fields.get("type"),
            retry_after=retry_after,
        )


def _query_value(value: Any) -> str:
    # httpx's spelling of query values: booleans lower-case, the rest as str().
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error_fields(response: ProviderResponse) -> dict[str, str]:
    """message/code/param/type from `{"error": {...}}` (OpenAI: message, type, param, code;
    Azure dated: code, message, target, innererror; Azure v1: code, message, param, type)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, str):
        return {"message": error}
    if not isinstance(error, dict):
        return {}
    fields: dict[str, str] = {}
    for key, source in (("message", "message"), ("code", "code"), ("param", "param"), ("type", "type")):
        value = error.get(source)
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
