"""The streaming part of every training-data converter (Bedrock's, Vertex AI's): JSONL bytes in
chunks of any size → whole converted lines, lossless or refused with every line number listed.

`LineConverter` cuts the stream into lines and keeps the bookkeeping; a provider's subclass
converts a batch of whole lines (`_lines`) and names its error (`_error`). Memory is bounded by
the chunk size plus the longest line (`max_line_bytes`; a longer line is refused, skipped to its
end, and counted). Blank lines are the subclass's to skip, but count for line numbers; a
trailing `\\r` is whitespace to JSON; the last line needs no newline. Once a line has been
refused, subclasses produce no more output (the upload it feeds is going to be aborted), but
every remaining line is still checked, so `finish()` reports them all at once.
"""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from tunegate.server.errors import InvalidArgument

__all__ = [
    "DEFAULT_MAX_LINE",
    "LineConversionError",
    "LineConverter",
    "aconvert_with",
    "convert_with",
    "ranges",
]

DEFAULT_MAX_LINE = 64 << 20


def ranges(lines: list[int]) -> str:
    """Ascending line numbers as compressed ranges: `[1, 2, 3, 7]` → `"1-3, 7"`."""
    out: list[str] = []
    start = prev = lines[0]
    for n in lines[1:]:
        if n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    out.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(out)


class Refused(Exception):
    """One line's reason for refusal, raised by a converter's per-line code and recorded by it
    against the line's number."""


def short(value: Any) -> str:
    """`repr(value)` cut to 40 characters, for a refusal reason."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def text_parts(content: Any, *, note: str = "") -> list[str]:
    """An OpenAI message's `content` as its text blocks: a string, or a non-empty list of
    `{"type": "text", "text": …}` parts; anything else is `Refused` (`note` follows the reason
    for a part that is not text)."""
    if type(content) is str:
        return [content]
    if type(content) is list and content:
        texts: list[str] = []
        for part in content:
            if type(part) is not dict:
                raise Refused("a content part is not an object")
            kind = part.get("type")
            if kind != "text":
                raise Refused(f"non-text content part {short(kind)}{note}")
            text = part.get("text")
            if type(text) is not str or len(part) != 2:
                raise Refused("a text part needs exactly `type` and a string `text`")
            texts.append(text)
        return texts
    if content is None:
        raise Refused("a message without content")
    raise Refused("content is neither a string nor a list of text parts")


class LineConversionError(InvalidArgument):
    """Lines of a training file that cannot be converted to `target`; `problems` lists every one
    of them by reason."""

    default_code = "invalid_training_file"

    def __init__(self, target: str, problems: Mapping[str, array[int]], param: str) -> None:
        self.problems: dict[str, list[int]] = {reason: list(lines) for reason, lines in problems.items()}
        total = sum(len(lines) for lines in self.problems.values())
        ordered = sorted(self.problems.items(), key=lambda item: item[1][0])
        details = "; ".join(
            f"{reason}: line{'s' if len(ls) > 1 else ''} {ranges(ls)}" for reason, ls in ordered
        )
        noun = "line" if total == 1 else "lines"
        super().__init__(
            f"{total} {noun} cannot be converted to {target} without losing content — {details}",
            param=param,
        )

    def line_numbers(self) -> list[int]:
        """Every offending 1-based line number, ascending."""
        return sorted(n for lines in self.problems.values() for n in lines)


class LineConverter:
    """Push converter: `feed(chunk)` returns converted bytes (whole lines, each ending in `\\n`,
    possibly none), `finish()` the rest, or raises `_error()` listing every refused line."""

    def __init__(self, *, param: str, max_line_bytes: int = DEFAULT_MAX_LINE) -> None:
        self._param = param
        self._max_line = max_line_bytes
        self._tail = b""
        self._line = 0  # lines completed so far
        self._skipping = False  # inside an over-long line, discarding up to its newline
        self._problems: dict[str, array[int]] = {}
        self.lines_out = 0

    # -- for subclasses ------------------------------------------------------------------------

    def _lines(self, lines: list[bytes]) -> bytes:
        """Converts whole lines numbered from `self._line + 1` (and adds them to `self._line`)."""
        raise NotImplementedError

    def _error(self) -> LineConversionError:
        raise NotImplementedError

    def _refuse(self, line: int, reason: str) -> None:
        lines = self._problems.get(reason)
        if lines is None:
            lines = self._problems[reason] = array("q")
        lines.append(line)

    # -- streaming -----------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return bool(self._problems)

    def feed(self, chunk: bytes) -> bytes:
        end = chunk.rfind(b"\n")
        if end < 0:
            if not self._skipping:
                self._tail += chunk
                self._check_tail()
            return b""
        if self._skipping:
            # The over-long line ends at this chunk's first newline.
            first = chunk.find(b"\n")
            self._skipping = False
            self._line += 1
            self._tail = chunk[end + 1 :]
            out = self._lines(chunk[first + 1 : end].split(b"\n")) if first < end else b""
        else:
            # One split of the whole chunk (no copy of it first): its last piece is the new tail,
            # and the old tail is the start of its first line.
            lines = chunk.split(b"\n")
            self._tail, tail = lines.pop(), self._tail
            if tail:
                lines[0] = tail + lines[0]
            out = self._lines(lines)
        self._check_tail()
        return out

    def _check_tail(self) -> None:
        if len(self._tail) > self._max_line:
            self._refuse(self._line + 1, f"a line longer than {self._max_line} bytes")
            self._tail = b""
            self._skipping = True

    def finish(self) -> bytes:
        out = b""
        if self._skipping:
            self._line += 1
            self._skipping = False
        elif self._tail:
            out = self._lines([self._tail])
            self._tail = b""
        if self._problems:
            raise self._error()
        return out


def convert_with(converter: LineConverter, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`converter` over an iterable of chunks; its error is raised at the end."""
    for chunk in chunks:
        out = converter.feed(chunk)
        if out:
            yield out
    out = converter.finish()
    if out:
        yield out


async def aconvert_with(converter: LineConverter, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """`convert_with` over an async iterable (CPU-bound per chunk: keep chunks ≤ a few MB)."""
    async for chunk in chunks:
        out = converter.feed(chunk)
        if out:
            yield out
    out = converter.finish()
    if out:
        yield out
