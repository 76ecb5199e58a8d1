"""Upload forms as a client may frame them, over raw sockets to a live edge: however the body is
cut into writes, the file that reaches the server is the one sent (content full of near-delimiters
included); a preamble, transport padding and an RFC 5987 filename are understood; bad syntax is a
400 ``invalid_multipart``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from tunegate.v1 import files_pb2

from tests.edge.test_app import Stack, running_edge
from tests.edge.test_connections import Raw

BOUNDARY = b"----tunegateBoundary7MA4YWxkTrZu0gW"

# Content full of near-delimiters: CRs, CRLF--, the boundary less its last byte, at every offset.
TRICKY = (
    b"\r" * 3
    + b"\r\n--"
    + BOUNDARY[:-1]
    + b"X\r\n-"
    + b"\r\n--"
    + BOUNDARY[:10]
    + os.urandom(3000)
    + (b"\r\n--" + BOUNDARY[:-1] + b"\r") * 20
    + b"\r\n"
)


def field(name: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"'.encode()


def body(*parts: tuple[bytes, bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """A multipart body from (header block, content) pairs."""
    out = [preamble]
    for headers, content in parts:
        out.append(b"--" + BOUNDARY + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n")
    out.append(b"--" + BOUNDARY + b"--\r\n" + epilogue)
    return b"".join(out)


def upload(form: bytes, content_type: bytes = b"multipart/form-data; boundary=" + BOUNDARY) -> bytes:
    head = b"POST /v1/files HTTP/1.1\r\nHost: edge\r\nContent-Type: " + content_type + b"\r\n"
    return head + f"Content-Length: {len(form)}\r\n\r\n".encode() + form


FORM = body(
    (field("purpose"), b"fine-tune"),
    (field("file") + b'; filename="train.jsonl"\r\nContent-Type: application/jsonl', TRICKY),
    preamble=b"This is a preamble.\r\n",
    epilogue=b"epilogue\r\n--" + BOUNDARY + b"\r\n",
)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with running_edge() as running:
        yield running


async def _send(stack: Stack, data: bytes, block: int) -> Raw:
    raw = await Raw.open(stack)
    for at in range(0, len(data), block):
        await raw.send(data[at : at + block])
    return raw


@pytest.mark.parametrize("block", [1, 39, 40, 41, 1000, 1 << 20])
async def test_every_cut_into_writes_uploads_the_same_file(stack: Stack, block: int) -> None:
    raw = await _send(stack, upload(FORM), block)
    answer = await raw.answer()
    assert answer.status == 200, answer.body
    assert answer.json()["bytes"] == len(TRICKY) and answer.json()["filename"] == "train.jsonl"
    (sent,) = stack.fake.uploads
    assert sent.data == TRICKY and sent.metadata[0].content_type == "application/jsonl"
    assert sent.metadata[0].purpose == files_pb2.FILE_PURPOSE_FINE_TUNE
    await raw.close()


async def test_no_epilogue_padding_and_an_rfc5987_filename(stack: Stack) -> None:
    form = (
        b"--" + BOUNDARY + b"  \t\r\n" + field("purpose") + b"\r\n\r\nfine-tune\r\n"
        b"--" + BOUNDARY + b"\r\n" + field("file") + b"; filename*=UTF-8''na%C3%AFve.jsonl\r\n\r\n{}\r\n"
        b"--" + BOUNDARY + b"--"
    )
    raw = await _send(stack, upload(form), len(form) + 500)
    answer = await raw.answer()
    assert answer.status == 200, answer.body
    assert answer.json()["filename"] == "naïve.jsonl" and stack.fake.uploads[0].data == b"{}"
    await raw.close()


@pytest.mark.parametrize(
    ("form", "content_type"),
    [
        (b"--" + BOUNDARY + b"\r\n" + field("purpose") + b"\r\n\r\nunfinished", None),  # no closing delimiter
        (body((b"Content-Disposition form-data", b"x")), None),  # a header line with no colon
        (body((field("purpose"), b"fine-tune")), b"multipart/form-data"),  # no boundary
        (body((field("purpose"), b"fine-tune")), b"multipart/form-data; boundary=other"),  # none found
    ],
    ids=["unfinished", "bad-header", "no-boundary", "wrong-boundary"],
)
async def test_bad_syntax_is_400(stack: Stack, form: bytes, content_type: bytes | None) -> None:
    request = upload(form) if content_type is None else upload(form, content_type)
    raw = await _send(stack, request, len(request))
    answer = await raw.answer()
    assert answer.status == 400, answer.body
    assert answer.json()["error"]["code"] == "invalid_multipart"
    assert not any(upload.finished.is_set() for upload in stack.fake.uploads)
    await raw.close()
