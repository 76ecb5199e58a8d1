"""A loopback proxy in front of an AWS emulator (moto): every request is forwarded unchanged, and
`FakeServer`'s fault injection applies in front of it — a 500 on S3's part uploads, a Bedrock
create that is performed but never answered (``drop_after_create``), a slow answer.

moto does not verify signatures, so a request signed for the proxy's address is accepted."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.fakes._common import ApiError, FakeServer

# Hop-by-hop headers, and what the client session sets itself.
_NOT_FORWARDED = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect"})
_NOT_RETURNED = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})


class AwsProxy(FakeServer):
    """Forwards to `target` (e.g. moto's `http://127.0.0.1:<port>`)."""

    request_id_header = "x-amzn-RequestId"

    def __init__(self, target: str) -> None:
        super().__init__(steps_per_get=0)
        self.target = target.rstrip("/")

    @property
    def url(self) -> str:
        return self.host

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._forward)

    def render_error(self, request: web.Request, error: ApiError) -> web.Response:
        return web.json_response(
            {"message": error.message},
            status=error.status,
            headers={"x-amzn-ErrorType": "InternalServerException", **error.headers},
        )

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            payload = await answer.read()
            returned = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_RETURNED}
            return web.Response(status=answer.status, body=payload, headers=returned)


def start_aws_proxy_in_thread(target: str) -> AwsProxy:
    """An :class:`AwsProxy` served from a daemon thread; call ``.close()`` when done."""
    return AwsProxy(target).start_in_thread(0)
