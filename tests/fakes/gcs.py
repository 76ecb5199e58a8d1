"""A fake GCS JSON API limited to resumable uploads, validating every request of the protocol.

Why beside gcp-storage-emulator: the emulator has no `DELETE` for an upload session (so a
cancelled upload cannot be checked), does not enforce the 256 KiB chunk rule, and rewrites the
whole partial object on every chunk (quadratic: unusable for a 1 GiB benchmark). This fake keeps
only a CRC32C and a byte count per session (or the bytes, with `keep_data`), so it serves the
benchmark in flat memory too.

Protocol checked (cloud.google.com/storage/docs/performing-resumable-uploads):
`POST /upload/storage/v1/b/{bucket}/o?uploadType=resumable` with a bearer token and a JSON body
naming the object → `200` + `Location` (the session URI); `PUT {session}` with
`Content-Range: bytes a-b/*|total` (contiguous, every non-final chunk a multiple of 256 KiB) →
`308` with `Range`, or `200` + the object resource (with `crc32c`) on the last one;
`bytes */total` finishes with no body; `DELETE {session}` → `499`, the session is gone.
Anything else is recorded in `violations` and answered 400.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
from aiohttp import web

QUANTUM = 256 * 1024
_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


@dataclass
class _Session:
    bucket: str
    name: str
    content_type: str
    received: int = 0
    crc: Any = field(default_factory=google_crc32c.Checksum)
    data: bytearray | None = None


@dataclass
class FakeGCS:
    buckets: set[str] = field(default_factory=set)
    tokens: set[str] | None = None
    """Accepted bearer tokens (None: any non-empty one)."""
    keep_data: bool = True
    objects: dict[tuple[str, str], bytes | int] = field(default_factory=dict)
    sessions: dict[str, _Session] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    deleted_sessions: int = 0
    fail_chunk: dict[int, int] = field(default_factory=dict)
    """Chunk number (0-based, over all sessions) → the status to answer it with."""
    deny_initiate: int | None = None
    url: str = ""
    _chunks_seen: int = 0
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/upload/storage/v1/b/{bucket}/o", self._initiate)
        app.router.add_put("/upload/session/{sid}", self._put)
        app.router.add_delete("/upload/session/{sid}", self._delete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _violation(self, why: str) -> web.Response:
        self.violations.append(why)
        return web.json_response({"error": {"code": 400, "message": why}}, status=400)

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        return auth.startswith("Bearer ") and bool(token) and (self.tokens is None or token in self.tokens)

    async def _initiate(self, request: web.Request) -> web.Response:
        if request.query.get("uploadType") != "resumable":
            return self._violation(f"uploadType {request.query.get('uploadType')!r}")
        if not self._authorized(request):
            return web.json_response({"error": {"code": 401, "message": "Invalid Credentials"}}, status=401)
        if self.deny_initiate:
            return web.json_response(
                {"error": {"code": self.deny_initiate, "message": "denied"}}, status=self.deny_initiate
            )
        bucket = request.match_info["bucket"]
        try:
            body = await request.json()
        except ValueError:
            return self._violation("initiate body is not JSON")
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return self._violation("initiate body names no object")
        if bucket not in self.buckets:
            message = "The specified bucket does not exist."
            return web.json_response({"error": {"code": 404, "message": message}}, status=404)
        sid = secrets.token_urlsafe(12)
        content_type = request.headers.get("X-Upload-Content-Type", "application/octet-stream")
        self.sessions[sid] = _Session(
            bucket, name, content_type, data=bytearray() if self.keep_data else None
        )
        return web.Response(status=200, headers={"Location": f"{self.url}/upload/session/{sid}"})

    async def _put(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.get(request.match_info["sid"])
        if session is None:
            return web.json_response({"error": {"code": 404, "message": "No such upload"}}, status=404)
        match = _RANGE.fullmatch(request.headers.get("Content-Range", ""))
        if match is None:
            return self._violation(f"Content-Range {request.headers.get('Content-Range')!r}")
        first, last, total = match.groups()
        number = self._chunks_seen
        self._chunks_seen += 1
        if number in self.fail_chunk:
            await request.read()
            status = self.fail_chunk[number]
            return web.json_response({"error": {"code": status, "message": "injected"}}, status=status)
        size = 0
        if first is not None:
            start, end = int(first), int(last)
            if start != session.received:
                return self._violation(f"chunk starts at {start}, expected {session.received}")
            async for piece in request.content.iter_chunked(1 << 20):
                size += len(piece)
                session.crc.update(piece)
                if session.data is not None:
                    session.data += piece
            if size != end - start + 1:
                return self._violation(f"chunk of {size} bytes for range {start}-{end}")
            session.received += size
            self.chunk_sizes.append(size)
        elif await request.read():
            return self._violation("a status request with a body")
        if total == "*":
            if size % QUANTUM:
                return self._violation(f"non-final chunk of {size} bytes (not a multiple of 256 KiB)")
            return web.Response(status=308, headers={"Range": f"bytes=0-{session.received - 1}"})
        if int(total) != session.received:
            return self._violation(f"total {total} but {session.received} bytes received")
        del self.sessions[request.match_info["sid"]]
        crc = base64.b64encode(session.crc.digest()).decode()
        self.objects[(session.bucket, session.name)] = (
            bytes(session.data) if session.data is not None else session.received
        )
        return web.json_response(
            {
                "kind": "storage#object",
                "bucket": session.bucket,
                "name": session.name,
                "size": str(session.received),
                "contentType": session.content_type,
                "crc32c": crc,
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        if self.sessions.pop(request.match_info["sid"], None) is None:
            return web.json_response({"error": {"code": 404, "message": "No such upload"}}, status=404)
        self.deleted_sessions += 1
        return web.Response(status=499)


async def _serve(port: int, buckets: list[str]) -> None:
    fake = FakeGCS(buckets=set(buckets), keep_data=False)
    await fake.start(port)
    print(json.dumps({"url": fake.url}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main() -> None:
    """Serve the fake on loopback (for the benchmark); prints `{"url": ...}` once listening."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bucket", action="append", default=[])
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.bucket))


if __name__ == "__main__":
    main()
