"""Create intents left in the intent-journal files of an earlier release, imported once.

That release recorded a create's intent on SQLite (without an idempotency key) as one JSON line
appended to `<database>-intents.0` or `.1`, before its row reached `jobs`:

    {"row": {<every jobs column but seq; request, metadata, snapshot, error as JSON text>},
     "metadata": [{"job_id": …, "key": …, "value": …}, …]}

`import_intent_files` runs when the database is opened, after the migrations and before
anything reads a job: each line's row is inserted unless a row with its id is stored already
(its batch was committed), its metadata pairs with it, in one transaction; then the files (and
their `-intents.lock`) are removed. The rows are intents (`attempted`, their provider jobs
tagged with their ids), so the reconciler finds their provider jobs by tag like any other. A
torn last line (the process died mid-append) or an unreadable line is skipped and logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.dialects import sqlite
from tunegate.server.store._database import Engine
from tunegate.server.store._schema import job_metadata, jobs

__all__ = ["INTENT_FILES", "import_intent_files"]

logger = logging.getLogger(__name__)

INTENT_FILES = ("-intents.0", "-intents.1")
"""Suffixes, after the database file's path, of the files an earlier release wrote."""
_LOCK_FILE = "-intents.lock"


def _entries(path: str) -> list[dict[str, Any]]:
    """The whole, readable lines of one file (none if it does not exist)."""
    try:
        lines = Path(path).read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    if lines[-1]:
        logger.warning("ignoring a torn last line (%d bytes) of %s", len(lines[-1]), path)
    found: list[dict[str, Any]] = []
    for line in lines[:-1]:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = None
        if isinstance(entry, dict) and isinstance(entry.get("row"), dict):
            found.append(entry)
        elif line:
            logger.warning("ignoring an unreadable line (%d bytes) of %s", len(line), path)
    return found


async def import_intent_files(engine: Engine, database_file: str) -> int:
    """Insert the intents recorded beside `database_file` whose rows are missing, then remove
    the files; returns how many lines were read (rows already stored included)."""
    entries = [entry for suffix in INTENT_FILES for entry in _entries(database_file + suffix)]
    if entries:
        rows = [entry["row"] for entry in entries]
        pairs = [pair for entry in entries for pair in entry.get("metadata") or ()]
        async with engine.begin() as conn:
            # A row stored already (by id) keeps what it has; so do its metadata pairs.
            await conn.execute(sqlite.insert(jobs).on_conflict_do_nothing(), rows)
            if pairs:
                await conn.execute(sqlite.insert(job_metadata).on_conflict_do_nothing(), pairs)
        logger.warning("imported %d intent line(s) left beside %s", len(entries), database_file)
    _remove(database_file)
    return len(entries)


def _remove(database_file: str) -> None:
    for suffix in (*INTENT_FILES, _LOCK_FILE):
        Path(database_file + suffix).unlink(missing_ok=True)
