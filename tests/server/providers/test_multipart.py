"""`MultipartFile`: exact Content-Length, lazy streaming, parseable by a standard parser."""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import AsyncIterator

import pytest
from tunegate.server.errors import Internal
from tunegate.server.providers._multipart import MultipartFile


async def source(chunks: list[bytes], log: list[str] | None = None) -> AsyncIterator[bytes]:
    for i, chunk in enumerate(chunks):
        if log is not None:
            log.append(f"produce {i}")
        yield chunk


async def collect(body: MultipartFile) -> bytes:
    return b"".join([part async for part in body.stream()])


async def test_body_parses_and_length_is_exact() -> None:
    chunks = [b'{"a": 1}\n', b'{"b": 2}\n']
    body = MultipartFile(
        fields={"purpose": "fine-tune"},
        file_field="file",
        filename='tr"ain\r\n.jsonl',
        size=18,
        chunks=source(chunks),
    )
    data = await collect(body)
    assert len(data) == body.content_length == int(body.headers()["Content-Length"])
    head = f"Content-Type: {body.headers()['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
    parts = list(message.iter_parts())
    assert [p.get_param("name", header="content-disposition") for p in parts] == ["purpose", "file"]
    assert parts[0].get_content() == "fine-tune"
    assert parts[1].get_payload(decode=True) == b"".join(chunks)
    assert b"\r\n.jsonl" not in data  # CR/LF in a file name cannot break the header
    assert parts[1].get_filename() == "tr%22ain%0D%0A.jsonl"


async def test_chunks_are_pulled_one_at_a_time() -> None:
    log: list[str] = []
    body = MultipartFile(
        fields={}, file_field="file", filename="f", size=6, chunks=source([b"ab", b"cd", b"ef"], log)
    )
    stream = body.stream()
    await anext(stream)  # preamble: nothing read from the source yet
    assert log == []
    assert await anext(stream) == b"ab" and log == ["produce 0"]
    assert await anext(stream) == b"cd" and log == ["produce 0", "produce 1"]


@pytest.mark.parametrize(("chunks", "size"), [([b"abc"], 2), ([b"a"], 2)])
async def test_size_mismatch_raises(chunks: list[bytes], size: int) -> None:
    body = MultipartFile(fields={}, file_field="file", filename="f", size=size, chunks=source(chunks))
    with pytest.raises(Internal):
        await collect(body)


async def test_empty_file() -> None:
    body = MultipartFile(fields={"purpose": "x"}, file_field="file", filename="f", size=0, chunks=source([]))
    assert len(await collect(body)) == body.content_length
