"""The chat relay's outbound HTTP: one pooled `aiohttp.ClientSession` per adapter, and the
provider's answer relayed as it arrives, aligned to whole server-sent events.

Why aiohttp here while the control plane (files, jobs, models) uses httpx (`_http.py`): a chat
completion is the gateway's hot path, and the client's CPU per call is most of what the gateway
adds. On the loopback fake OpenAI (`bench/chat_provider_cpu.py`: client CPU only for unary
calls, the fake in another process; per streamed event the in-process fake's CPU is included;
ranges over runs on a shared 2-core machine), the same chat POST cost:

    client                                    unary c=1       unary c=16      per streamed event
    httpx `HttpClient` (pooled AsyncClient)    1.5-1.8 ms      2.1-3.0 ms      110-160 µs
    this relay (aiohttp)                       0.36 ms         0.43 ms          42-67 µs
    bare aiohttp session (the floor)           0.35 ms         0.33 ms          30-59 µs

httpx's pool grows more expensive with concurrency (2-3 ms per call at c=16), which alone
keeps the gateway from the issue's "≥ 1.25× Portkey's requests/s at c=16". The control plane
keeps httpx:
its calls are few, and it needs HTTP/2, streamed multipart uploads and `httpx.MockTransport`
unit tests. aiohttp speaks HTTP/1.1 only, so chat to a provider uses one connection per call in
flight (the pool keeps them alive between calls).

`ChatClient` (one per adapter, built with the adapter's `HttpClient`, whose settings, retry
delays and error mapping it shares):

- the session is built lazily, on the running loop at the first chat, and closed by `aclose()`;
- timeouts: `connect` = `HttpSettings.timeout_seconds` (waiting for a free pooled connection plus
  connecting), `sock_connect` = `connect_timeout_seconds`, `sock_read` = `chat_timeout_seconds`
  (600 s: the longest wait for the head or the next bytes — a reasoning model may think for
  minutes), no total (a stream may last as long as it keeps sending);
- `HttpSettings.trust_env`: proxies from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and
  `NO_PROXY`, read when the session is built and resolved once per origin (aiohttp's own
  `trust_env` would look them up, and read `~/.netrc`, in a thread on every call — that cost
  0.3–0.8 ms CPU per call, and a `.netrc` entry would clash with the credential headers); the CA
  bundle is httpx's (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else certifi), so both clients
  trust the same CAs;
- redirects never followed (they could carry the credentials to another host); no cookies kept
  (the session is shared by every account); the connector holds at most `max_connections`
  connections; compressed answers are decompressed (`auto_decompress`);
- errors are `HttpClient`'s: a non-2xx answer is mapped by `HttpClient.error_for_answer`
  (status, OpenAI/Azure envelope, `retry_after`); a failure to connect (DNS, refused, TLS, no
  free pooled connection in time) is `ProviderUnreachable` and is retried with `HttpClient`'s
  backoff (not inside `no_retries()`); anything after the request may have been sent is never
  retried (chat is paid): a connection broken before or during the answer is `UpstreamError`,
  a read timeout `DeadlineExceeded`.

`ResponseChunks` is what `ChatReply.chunks` holds for a stream:

- `text/event-stream`: each item is *all* the whole events received so far — the bytes up to and
  including the last event terminator (a blank line: `\\n\\n`, `\\r\\n\\r\\n` or `\\r\\r`) of
  everything the connection has buffered at that read, so a burst of events is one item (one
  gRPC message, one HTTP write downstream); a partial event waits for the rest. Bytes are relayed
  unchanged (never parsed or re-rendered); what is left when the provider ends its body is
  relayed as the last item;
- any other content type: the body as received;
- a broken connection or a read timeout raises (`UpstreamError`, `DeadlineExceeded`); `aclose()`
  (also when the iteration was never started) closes the response's connection, so the provider
  sees the cancellation; a body read to its end returns the connection to the pool.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx
import yarl
from tunegate.server.errors import TunegateError
from tunegate.server.providers._http import Endpoint, HttpClient, retries_enabled
from tunegate.server.providers.interface import ChatReply

__all__ = ["PASSED_HEADERS", "ChatClient", "ChatResponse", "ResponseChunks", "passed_headers", "relay_chat"]

log = logging.getLogger(__name__)

PASSED_HEADERS = frozenset(
    {"x-request-id", "apim-request-id", "openai-processing-ms", "openai-version", "openai-model"}
)
"""Response headers of a chat answer worth passing back (beside every `x-ratelimit-*`)."""
_TERMINATORS = (b"\n\n", b"\r\r", b"\r\n\r\n")
_USER_AGENT = "tunegate"

ChatResponse = aiohttp.ClientResponse
"""A 2xx chat answer whose head has arrived (body unread)."""


def passed_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The request id, processing time and rate-limit headers of an answer, lower-case names."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in PASSED_HEADERS or lower.startswith("x-ratelimit-"):
            out[lower] = value
    return out


class ChatClient:
    """One adapter's chat POSTs (see the module docstring). `http` is the adapter's `HttpClient`:
    its settings, backoff, injected sleep and error mapping are used here too."""

    def __init__(self, http: HttpClient) -> None:
        self.http = http
        settings = http.settings
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.timeout_seconds,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.chat_timeout_seconds,
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies: dict[str, str] = {}
        self._proxy_of: dict[tuple[str, str, int | None], str | None] = {}

    def proxy_for(self, url: yarl.URL) -> str | None:
        """The proxy for `url` from the environment read when the session was built
        (`HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`, except `NO_PROXY` hosts), or None."""
        if not self._proxies:
            return None
        key = (url.scheme, url.host or "", url.port)
        if key not in self._proxy_of:
            proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
            if proxy and urllib.request.proxy_bypass(url.host or ""):
                proxy = None
            self._proxy_of[key] = proxy
        return self._proxy_of[key]

    def session(self) -> aiohttp.ClientSession:
        """The pooled session of the running loop (built at first use)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            settings = self.http.settings
            connector = aiohttp.TCPConnector(
                limit=settings.max_connections,
                limit_per_host=0,
                ssl=httpx.create_ssl_context(trust_env=settings.trust_env),
            )
            self._proxies = urllib.request.getproxies_environment() if settings.trust_env else {}
            self._proxy_of.clear()
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                trust_env=False,  # proxies: `proxy_for`; aiohttp's own reads .netrc on every call
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": _USER_AGENT},
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        """Closes the session and its pooled connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def post(
        self, endpoint: Endpoint, path: str, body: bytes, headers: Mapping[str, str]
    ) -> ChatResponse:
        """POSTs `body` to `{endpoint.base_url}{path}` and returns once a 2xx answer's head has
        arrived (the caller reads or closes it). Raises a `TunegateError`: the provider's error
        for a non-2xx answer (its body read whole), or a transport failure as the module
        docstring says; only a request that never left (`ProviderUnreachable`) is sent again."""
        session = self.session()
        url = yarl.URL(endpoint.base_url + path)
        proxy = self.proxy_for(url)
        params = endpoint.params or None
        all_headers = {**endpoint.headers, **headers}
        http = self.http
        attempt = 0
        while True:
            try:
                response = await session.request(
                    "POST",
                    url,
                    params=params,
                    data=body,
                    headers=all_headers,
                    proxy=proxy,
                    allow_redirects=False,
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                error = http.unreachable(
                    "timed out" if isinstance(exc, aiohttp.ConnectionTimeoutError) else type(exc).__name__
                )
                delay = http.retry_delay(attempt, None)
                if not retries_enabled() or attempt >= http.settings.max_retries or delay is None:
                    raise error from exc
                log.info(
                    "POST %s failed (%s); retry %d/%d in %.2f s",
                    path,
                    error.code,
                    attempt + 1,
                    http.settings.max_retries,
                    delay,
                )
                await http.sleep(delay)
                attempt += 1
                continue
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise self.transport_error(exc) from exc
            if 200 <= response.status < 300:
                return response
            try:  # an error answer is small: read it to make the error, then release it
                data = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                data = b""
            finally:
                response.release()
            raise http.error_for_answer(response.status, response.headers, data, reason=response.reason or "")

    def transport_error(self, exc: BaseException) -> TunegateError:
        """The error for a failure after the request may have been sent (never retried)."""
        if isinstance(exc, asyncio.TimeoutError):  # aiohttp's read timeouts are TimeoutErrors too
            return self.http.read_timed_out(self.http.settings.chat_timeout_seconds)
        return self.http.connection_failed(type(exc).__name__)

    async def read(self, response: ChatResponse) -> bytes:
        """A 2xx answer's whole (decoded) body; the connection goes back to the pool."""
        try:
            return await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_error(exc) from exc
        finally:
            response.release()


class ResponseChunks:
    """An async iterator of a streamed chat answer's body (see the module docstring). Iterate it
    once; `aclose()` it when done (`contextlib.aclosing`)."""

    __slots__ = ("_buffer", "_client", "_closed", "_content", "_events", "_response")

    def __init__(self, client: ChatClient, response: ChatResponse) -> None:
        self._client = client
        self._response = response
        self._content = response.content
        content_type = response.headers.get("Content-Type", "")
        self._events = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        self._buffer = b""
        self._closed = False

    def __aiter__(self) -> ResponseChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            while True:
                chunk = await self._content.readany()
                if not chunk:  # the body ended
                    rest, self._buffer = self._buffer, b""
                    self._closed = True
                    self._response.release()
                    if rest:
                        return rest
                    raise StopAsyncIteration
                if not self._events:
                    return chunk
                searched = len(self._buffer)
                data = self._buffer + chunk if searched else chunk
                cut = _last_event_end(data, max(0, searched - 3))
                if cut == 0:
                    self._buffer = data
                    continue
                self._buffer = data[cut:]
                return data if cut == len(data) else data[:cut]
        except StopAsyncIteration:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            await self.aclose()
            raise self._client.transport_error(exc) from exc
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stops reading and closes the response's connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._response.close()


def _last_event_end(data: bytes, start: int) -> int:
    """The offset just past the last event terminator in `data[start:]`, or 0 when none."""
    end = 0
    for terminator in _TERMINATORS:
        at = data.rfind(terminator, start)
        if at >= 0:
            end = max(end, at + len(terminator))
    return end


async def one_item(body: bytes) -> AsyncIterator[bytes]:
    """`body` as a one-item async iterator (a unary answer's `ChatReply.chunks`)."""
    yield body


async def relay_chat(
    client: ChatClient, endpoint: Endpoint, path: str, body: bytes, *, stream: bool
) -> ChatReply:
    """POSTs an OpenAI chat body unchanged to an OpenAI-compatible `path` through `client`, sent
    again only when it never left (a failure to connect).

    `stream=False`: returns once the whole answer is read (`chunks` yields it as one item).
    `stream=True`: returns once the answer's head has arrived; `chunks` relays its events as
    they arrive (`ResponseChunks`). A non-2xx answer raises before anything is returned."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
    }
    response = await client.post(endpoint, path, body, headers)
    content_type = response.headers.get("Content-Type") or (
        "text/event-stream" if stream else "application/json"
    )
    reply_headers = passed_headers(response.headers)
    if stream:
        chunks: AsyncIterator[bytes] = ResponseChunks(client, response)
    else:
        chunks = one_item(await client.read(response))
    return ChatReply(content_type=content_type, chunks=chunks, headers=reply_headers)
