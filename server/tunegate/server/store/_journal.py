"""The intent journal: where, on SQLite, a create's intent is recorded before the provider call.

An intent must be on record before the provider is asked for a paid job (`tunegate.server.jobs`). On the
database one process serves (SQLite inline), that record is one line appended here — one
`write(2)` of the row as JSON — and the row reaches the `jobs` table a little later, in a batch
(`JobRepository`), usually together with its completion. An appended line is in the page cache
when `append` returns: it survives the process dying, as a commit under `synchronous=NORMAL`
does (neither survives losing power before the kernel writes it back). At start-up every line
whose row the table lacks is inserted as the intent it was (`JobRepository.recover`), before
anything reads a job, and the reconciler finds its job at the provider by tag.

Two files, `<database>-intents.0` and `.1`. Lines are appended to the current one. A batch
switches the appends to the other file first, carrying over the lines of intents it does not
store, and empties the file it switched from once its transaction has committed: every line of
an intent not yet in the table is in the current file, in both after a crash mid-switch, and a
replayed line whose row exists changes nothing. A lock file keeps a second `Database` on the
same file (another process, or this one) from sharing the journal: it stores its intents
directly.
"""

from __future__ import annotations

import fcntl
import logging
import os
from typing import Any

import orjson

__all__ = ["IntentJournal"]

logger = logging.getLogger(__name__)


class IntentJournal:
    """Two append-only files of intent lines (see the module docstring)."""

    def __init__(self, base: str, lock_fd: int) -> None:
        self.paths = (f"{base}-intents.0", f"{base}-intents.1")
        self._lock_fd = lock_fd
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fds = [os.open(path, flags, 0o600) for path in self.paths]
        self._sizes = [os.fstat(fd).st_size for fd in self._fds]
        self._current = 0

    @classmethod
    def open(cls, base: str) -> IntentJournal | None:
        """The journal beside the database file `base`; None if another `Database` holds it."""
        lock_fd = os.open(f"{base}-intents.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            logger.info("the intent journal of %s is in use; intents are stored directly", base)
            return None
        try:
            return cls(base, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    def append(self, data: bytes) -> None:
        """Append whole lines to the current file; on a failed or short write the file is cut
        back to where it was (no torn line precedes the next append) and the error raised."""
        index = self._current
        fd, size = self._fds[index], self._sizes[index]
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to the intent journal ({written} of {len(data)} bytes)")
        except BaseException:
            os.ftruncate(fd, size)
            raise
        self._sizes[index] = size + written

    def switch(self, carried: bytes) -> int:
        """Make the other file current, `carried` (the lines still needed) written to it first;
        returns the file switched from, to `clear` once its rows are committed."""
        previous, self._current = self._current, 1 - self._current
        if carried:
            try:
                self.append(carried)
            except BaseException:
                self._current = previous
                raise
        return previous

    def clear(self, index: int) -> None:
        """Empty a file all of whose lines are committed (or carried into the current one)."""
        os.ftruncate(self._fds[index], 0)
        self._sizes[index] = 0

    def entries(self) -> list[dict[str, Any]]:
        """Every whole line of both files, decoded; a torn or unreadable line is skipped."""
        found: list[dict[str, Any]] = []
        for path in self.paths:
            with open(path, "rb") as handle:
                data = handle.read()
            lines = data.split(b"\n")
            if lines[-1]:
                logger.warning("ignoring a torn last line (%d bytes) of %s", len(lines[-1]), path)
            for line in lines[:-1]:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    logger.warning("ignoring an unreadable line (%d bytes) of %s", len(line), path)
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("row"), dict):
                    found.append(entry)
        return found

    def reset(self) -> None:
        """Empty both files (every line is in the table)."""
        for index in (0, 1):
            self.clear(index)
        self._current = 0

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        os.close(self._lock_fd)  # releases the lock
