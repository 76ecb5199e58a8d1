"""The edge's streaming multipart/form-data reader: every way a body can be cut into blocks gives
the same parts; bad syntax is a FormError; a large block is handed out without a copy."""

from __future__ import annotations

import os
import random

import pytest
from tunegate.edge._multipart import MAX_HEADER_BYTES, MIN_CHUNK, FormError, FormReader, boundary_of

BOUNDARY = b"----tunegateBoundary7MA4YWxkTrZu0gW"
DELIMITER = b"\r\n--" + BOUNDARY


class Blocks:
    """A body delivered in the given blocks, as `StreamReader.readany()` would."""

    def __init__(self, body: bytes, sizes: list[int]) -> None:
        self.blocks: list[bytes] = []
        at = 0
        for size in sizes:
            if at >= len(body):
                break
            self.blocks.append(body[at : at + size])
            at += size
        if at < len(body):
            self.blocks.append(body[at:])

    async def readany(self) -> bytes:
        return self.blocks.pop(0) if self.blocks else b""


def body(*parts: tuple[bytes, bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """A multipart body from (header block, content) pairs."""
    out = [preamble]
    for headers, content in parts:
        out.append(b"--" + BOUNDARY + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n")
    out.append(b"--" + BOUNDARY + b"--\r\n" + epilogue)
    return b"".join(out)


def field(name: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"'.encode()


async def read_all(source: Blocks, size: int = 1 << 20) -> list[tuple[str | None, str | None, bytes]]:
    reader = FormReader(source, BOUNDARY)
    parts = []
    while (part := await reader.next_part()) is not None:
        pieces = []
        while piece := await reader.read_chunk(size):
            assert len(piece) <= max(size, MIN_CHUNK)
            pieces.append(piece)
        parts.append((part.name, part.filename, b"".join(pieces)))
    return parts


# Content full of near-delimiters: CRs, CRLF--, the boundary less its last byte, at every offset.
TRICKY = (
    b"\r" * 3
    + b"\r\n--"
    + BOUNDARY[:-1]
    + b"X\r\n-"
    + b"\r\n--"
    + BOUNDARY[:10]
    + os.urandom(5000)
    + (b"\r\n--" + BOUNDARY[:-1] + b"\r") * 20
    + b"\r\n"
)
BODY = body(
    (field("purpose"), b"fine-tune"),
    (field("file") + b'; filename="train.jsonl"\r\nContent-Type: application/jsonl', TRICKY),
    (field("empty"), b""),
    (field("after"), b"\r\n"),
    preamble=b"This is a preamble.\r\n",
    epilogue=b"epilogue\r\n--" + BOUNDARY + b"\r\n",
)
EXPECTED = [
    ("purpose", None, b"fine-tune"),
    ("file", "train.jsonl", TRICKY),
    ("empty", None, b""),
    ("after", None, b"\r\n"),
]


@pytest.mark.parametrize("block", [1, 2, 3, 5, 39, 40, 41, 42, 43, 80, 81, 127, 1000, 1 << 20])
async def test_every_cut_into_blocks_gives_the_same_parts(block: int) -> None:
    assert await read_all(Blocks(BODY, [block] * len(BODY))) == EXPECTED


async def test_random_cuts_and_read_sizes_give_the_same_parts() -> None:
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.choice([1, 2, 38, 39, 40, 41, rng.randrange(1, 3000)]) for _ in range(len(BODY))]
        assert await read_all(Blocks(BODY, sizes), size=rng.choice([1, 128, 129, 4096, 1 << 20])) == EXPECTED


async def test_a_first_delimiter_at_the_very_start_and_no_epilogue() -> None:
    raw = b"--" + BOUNDARY + b"\r\n" + field("a") + b"\r\n\r\nx\r\n--" + BOUNDARY + b"--"
    assert await read_all(Blocks(raw, [len(raw)])) == [("a", None, b"x")]


async def test_headers_parameters_and_folding() -> None:
    headers = (
        b'Content-Disposition: form-data; name="file";\r\n'
        b"\tfilename*=UTF-8''na%C3%AFve.jsonl\r\n"
        b"content-type:  text/plain; charset=latin-1 "
    )
    reader = FormReader(Blocks(body((headers, b"\xe9")), [7] * 100), BOUNDARY)
    part = await reader.next_part()
    assert part is not None
    assert (part.name, part.filename) == ("file", "naïve.jsonl")
    assert part.headers["CONTENT-TYPE"] == "text/plain; charset=latin-1"
    assert part.get_charset("utf-8") == "latin-1"
    assert await reader.read_chunk(100) == b"\xe9"
    assert await reader.read_chunk(100) == b""
    assert await reader.next_part() is None
    assert await reader.next_part() is None


async def test_a_part_without_headers_or_disposition_has_no_name() -> None:
    raw = b"--" + BOUNDARY + b"\r\n\r\nbare" + DELIMITER + b"\r\nX-Other: 1\r\n\r\n" + DELIMITER + b"--"
    assert await read_all(Blocks(raw, [3] * 100)) == [(None, None, b"bare"), (None, None, b"")]


async def test_a_filename_that_is_not_utf8_is_kept_as_surrogates() -> None:
    raw = body((field("file") + b'; filename="\xff.jsonl"', b"{}"))
    part = await FormReader(Blocks(raw, [len(raw)]), BOUNDARY).next_part()
    assert part is not None and part.filename is not None
    with pytest.raises(UnicodeEncodeError):
        part.filename.encode("utf-8")


async def test_transport_padding_after_a_delimiter_is_skipped() -> None:
    raw = b"--" + BOUNDARY + b"  \t\r\n" + field("a") + b"\r\n\r\nv\r\n--" + BOUNDARY + b"--\r\n"
    for block in (1, 2, len(raw)):
        assert await read_all(Blocks(raw, [block] * len(raw))) == [("a", None, b"v")]


async def test_a_large_block_is_handed_out_without_a_copy() -> None:
    one, two = os.urandom(512 * 1024).replace(b"\r", b"."), os.urandom(512 * 1024).replace(b"\r", b".")
    head = b"--" + BOUNDARY + b"\r\n" + field("file") + b"\r\n\r\n"
    source = Blocks(b"", [])
    source.blocks = [head, one, two, DELIMITER + b"--\r\n"]
    reader = FormReader(source, BOUNDARY)
    assert await reader.next_part() is not None
    assert await reader.read_chunk(1 << 20) is one
    assert await reader.read_chunk(1 << 20) is two
    assert await reader.read_chunk(1 << 20) == b""
    assert await reader.next_part() is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"--" + BOUNDARY + b"\r\n" + field("a") + b"\r\n\r\nunfinished", "ended before"),
        (b"no delimiter at all", "ended before"),
        (b"--" + BOUNDARY + b"garbage\r\n\r\n\r\n--" + BOUNDARY + b"--", "must end its line"),
        (b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nx\r\n--" + BOUNDARY + b"--", "malformed part header"),
        (b"--" + BOUNDARY + b"\r\n: empty name\r\n\r\nx\r\n--" + BOUNDARY + b"--", "malformed part header"),
        (b"--" + BOUNDARY + b"\r\nX: " + b"y" * MAX_HEADER_BYTES + b"\r\n\r\n", "headers are longer"),
    ],
)
async def test_bad_syntax_is_a_form_error(raw: bytes, message: str) -> None:
    for block in (1, 64, len(raw)):
        with pytest.raises(FormError, match=message):
            await read_all(Blocks(raw, [block] * len(raw)))


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a b:c"', b"a b:c"),
        ("multipart/form-data; charset=utf-8; BOUNDARY=x", b"x"),
    ],
)
def test_boundary_of(content_type: str, boundary: bytes) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "b" * 71],
)
def test_boundary_of_refuses(content_type: str) -> None:
    with pytest.raises(FormError):
        boundary_of(content_type)
