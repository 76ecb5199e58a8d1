"""What a prober sends the edge, over raw sockets to a live edge on 127.0.0.1: protocol switches,
``CONNECT``, pipelined upgrades, missing or duplicate ``Host``, too many headers, and the
timeouts — a head sent a byte at a time, a stalled body, an idle keep-alive connection — on
every route, percent-encoded paths included. Each gets a 4xx or an answer, never a hang.

The timeouts are configured short here (under a second); every wait is bounded by
``asyncio.wait_for`` so a connection left open fails the test instead of hanging it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from tunegate.edge import build_routes

from tests.edge.test_app import Stack, running_edge
from tests.edge.test_connections import Raw, get, post

_SHORT = 0.5
_LONG = 30.0
_BOUND = 10.0  # far above every configured timeout: reaching it means the edge hung


def _target(template: str) -> str:
    # Every path variable percent-encoded (`file%2Dabc` is `file-abc`): aiohttp decodes it.
    return re.sub(r"\{[a-z_]+\}", "id%2Dabc", template)


def _request(verb: str, template: str) -> bytes:
    """A complete request to the route, with a small body where it takes one."""
    target = _target(template)
    if verb == "GET" or verb == "DELETE":
        return f"{verb} {target} HTTP/1.1\r\nHost: edge\r\n\r\n".encode()
    if template.endswith(("/files", "/parts")):
        form = b"--b--\r\n"
        head = (
            f"POST {target} HTTP/1.1\r\nHost: edge\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(form)}\r\n\r\n"
        )
        return head.encode() + form
    return post(target, b"{}")


ROUTES = [(route.verb, route.path) for route in build_routes()] + [
    ("GET", "/v1/%66iles"),
    ("GET", "/healthz"),
]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with running_edge() as running:
        yield running


async def _exchange(stack: Stack, data: bytes) -> Raw:
    raw = await Raw.open(stack)
    await raw.send(data)
    return raw


@pytest.mark.parametrize(
    "upgrade",
    [
        ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA"),
        ("Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"),
    ],
    ids=["h2c", "websocket"],
)
async def test_an_upgrade_is_refused_and_the_connection_closed(
    stack: Stack, upgrade: tuple[str, ...]
) -> None:
    raw = await _exchange(stack, get("/v1/files/file-abc", *upgrade))
    answer = await raw.answer()
    assert answer.status == 400 and answer.json()["error"]["code"] == "upgrade_not_supported"
    assert answer.headers["x-request-id"] and answer.headers["connection"] == "close"
    assert await raw.closed()
    await raw.close()


async def test_connect_is_refused_and_the_connection_closed(stack: Stack) -> None:
    raw = await _exchange(stack, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    answer = await raw.answer()
    assert answer.status == 405 and answer.json()["error"]["code"] == "method_not_allowed"
    assert await raw.closed()
    await raw.close()


async def test_get_upgrade_get_in_one_packet_are_answered_not_left_hanging(stack: Stack) -> None:
    raw = await _exchange(
        stack,
        get("/v1/files/file-1")
        + get("/v1/files/file-2", "Connection: Upgrade", "Upgrade: h2c")
        + get("/v1/files/file-3"),
    )
    first, second = await raw.answer(), await raw.answer()
    assert first.status == 200 and first.json()["id"] == "file-1"
    assert second.status == 400 and second.headers["connection"] == "close"
    assert await raw.closed()  # the third is the client's to send again, on a new connection
    await raw.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/files/file-abc HTTP/1.1\r\n\r\n",
        b"GET /v1/files/file-abc HTTP/1.1\r\nHost: edge\r\nHost: other\r\n\r\n",
        b"GET /v1/files/file-abc HTTP/1.1\r\nHost: edge\r\nhost: edge\r\n\r\n",
    ],
    ids=["no-host", "two-hosts", "two-hosts-same-value"],
)
async def test_host_missing_or_twice_is_400(stack: Stack, head: bytes) -> None:
    raw = await _exchange(stack, head)
    answer = await raw.answer()
    assert answer.status == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert "host" in answer.json()["error"]["message"].lower() and answer.headers["x-request-id"]
    assert await raw.closed()
    await raw.close()


async def test_http_1_0_needs_no_host(stack: Stack) -> None:
    raw = await _exchange(stack, b"GET /v1/files/file-abc HTTP/1.0\r\n\r\n")
    assert (await raw.answer()).json()["id"] == "file-abc"
    await raw.close()


async def test_more_than_128_headers_is_a_4xx(stack: Stack) -> None:
    raw = await _exchange(stack, get("/v1/files/file-abc", *(f"X-H-{i}: v" for i in range(128))))
    answer = await raw.answer()
    assert 400 <= answer.status < 500 and answer.json()["error"]["message"]
    assert await raw.closed()
    await raw.close()
    raw = await _exchange(stack, get("/v1/files/file-abc", *(f"X-H-{i}: v" for i in range(126))))
    assert (await raw.answer()).status == 200  # 126 + Host: at the limit
    await raw.close()


async def _trickle(raw: Raw, data: bytes, every: float, sent: list[int]) -> None:
    """Send ``data`` a byte at a time, ``every`` seconds apart, counting the bytes in ``sent``."""
    for byte in data:
        try:
            await raw.send(bytes([byte]))
        except ConnectionError:
            return
        sent.append(byte)
        await asyncio.sleep(every)


async def test_a_head_sent_a_byte_at_a_time_gets_408_on_every_route() -> None:
    async with running_edge(head_timeout=_SHORT, keepalive_timeout=_LONG, body_timeout=_LONG) as stack:

        async def probe(verb: str, template: str) -> None:
            request = _request(verb, template)
            head = request[: request.index(b"\r\n\r\n") + 4]
            raw = await Raw.open(stack)
            sent: list[int] = []
            sender = asyncio.create_task(_trickle(raw, head, 0.1, sent))
            answer = await raw.answer()
            sender.cancel()
            assert len(sent) < len(head), template  # cut off before the head was done
            assert answer.status == 408 and answer.json()["error"]["message"], template
            # A byte the sender wrote after the edge closed makes the kernel reset: closed too.
            with contextlib.suppress(ConnectionResetError):
                assert await raw.closed()
                await raw.close()

        await asyncio.gather(*(probe(verb, template) for verb, template in ROUTES))


async def test_a_head_that_begins_after_an_answer_is_timed_from_its_first_byte() -> None:
    async with running_edge(head_timeout=_SHORT, keepalive_timeout=_LONG) as stack:
        raw = await _exchange(stack, get("/v1/files/file-abc"))
        assert (await raw.answer()).status == 200
        await asyncio.sleep(2 * _SHORT)  # idle, not sending a head: the keep-alive applies
        await raw.send(b"GET /v1/fi")
        answer = await raw.answer()
        assert answer.status == 408 and await raw.closed()
        await raw.close()


async def test_a_stalled_body_gets_408_on_every_route_that_takes_one() -> None:
    async with running_edge(body_timeout=_SHORT, keepalive_timeout=_LONG, head_timeout=_LONG) as stack:

        async def probe(verb: str, template: str) -> None:
            request = _request(verb, template)
            head, _, body = request.partition(b"\r\n\r\n")
            if b"multipart" in head:  # a form cut off inside its first part
                body = b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine'
            # Promise more than is sent: the edge waits for the rest, which never comes.
            head = re.sub(rb"Content-Length: \d+", f"Content-Length: {len(body) + 100}".encode(), head)
            raw = await _exchange(stack, head + b"\r\n\r\n" + body)
            answer = await raw.answer()
            assert answer.status == 408 and answer.json()["error"]["code"] == "request_timeout", template
            assert await raw.closed()
            await raw.close()

        # The fake stack has no Uploads service: a part is refused before its body is read.
        routes = [(verb, path) for verb, path in ROUTES if verb == "POST" and "/parts" not in path]
        await asyncio.gather(*(probe(verb, template) for verb, template in routes))


async def test_an_idle_keep_alive_connection_is_closed_on_every_route() -> None:
    async with running_edge(keepalive_timeout=_SHORT, head_timeout=_LONG, body_timeout=_LONG) as stack:

        async def probe(verb: str, template: str) -> None:
            raw = await _exchange(stack, _request(verb, template))
            answer = await raw.answer()
            assert answer.status < 500 or answer.status == 501, (template, answer)
            assert "connection" not in answer.headers, template  # kept alive, then closed when idle
            assert await asyncio.wait_for(raw.closed(), _BOUND)
            await raw.close()

        await asyncio.gather(*(probe(verb, template) for verb, template in ROUTES))


async def test_a_connection_that_never_sends_is_closed_after_the_keepalive() -> None:
    async with running_edge(keepalive_timeout=_SHORT) as stack:
        raw = await Raw.open(stack)
        assert await raw.closed()
        await raw.close()
