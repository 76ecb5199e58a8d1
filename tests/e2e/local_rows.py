"""The local provider's job rows as a test sees them: read straight from the gateway's SQLite
database (`<data_dir>/tunegate.db`, table `local_jobs`), read-only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def local_jobs(data_dir: Path) -> list[dict[str, Any]]:
    """Every local job object (native ids), oldest first; none when the database is not there."""
    path = data_dir / "tunegate.db"
    if not path.is_file():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            rows = conn.execute("SELECT body FROM local_jobs ORDER BY created_at, id").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []
    return [json.loads(body) for (body,) in rows]


def local_job(
    data_dir: Path, *, native_id: str | None = None, tag: str | None = None
) -> dict[str, Any] | None:
    """The local job with `native_id`, or tagged with gateway job id `tag`."""
    for job in local_jobs(data_dir):
        if job["id"] == native_id or (tag is not None and job["metadata"].get("tunegate_job_id") == tag):
            return job
    return None
