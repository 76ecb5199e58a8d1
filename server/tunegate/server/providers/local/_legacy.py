"""Importing an earlier release's file-based local state into the shared store, once.

Earlier releases kept `<root>/files/<id>` (+ `<id>.json` metadata) and `<root>/jobs/<id>/`
(`job.json`, `job_events.jsonl`, `checkpoints.jsonl` + `checkpoints/step-N/`, `model/`,
`step_metrics.csv`). Each file and job not yet in the store is copied in (bytes to blobs);
a directory imported is renamed `<name>.imported` so the import happens once and the old state
stays on disk until the operator removes it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tunegate.server.blobs import BlobStore
from tunegate.server.providers._openai import TAG_KEY
from tunegate.server.providers.local._blobio import upload_dir, upload_file
from tunegate.server.providers.local._jobdir import iter_job_dirs, read_json, read_jsonl
from tunegate.server.store import LocalFileRecord, LocalStore

__all__ = ["import_legacy"]

logger = logging.getLogger("tunegate.server")


async def import_legacy(root: Path, store: LocalStore, blobs: BlobStore) -> None:
    """Import `<root>/files` and `<root>/jobs` when present (see the module docstring)."""
    files, jobs = root / "files", root / "jobs"
    if files.is_dir():
        for meta_path in sorted(files.glob("*.json")):
            file_id = meta_path.name.removesuffix(".json")
            data = files / file_id
            meta = read_json(meta_path)
            if meta is None or not data.is_file() or await store.get_file(file_id) is not None:
                continue
            key = await upload_file(blobs, data)
            await store.insert_file(
                LocalFileRecord(
                    id=file_id,
                    filename=str(meta["filename"]),
                    purpose=str(meta["purpose"]),
                    bytes=int(meta["bytes"]),
                    created_at=int(meta["created_at"]),
                    blob_key=key,
                )
            )
        os.replace(files, files.with_name("files.imported"))
    if jobs.is_dir():
        count = 0
        for job_dir in iter_job_dirs(jobs):
            job = read_json(job_dir.job)
            if (
                job is None
                or job.get("id") != job_dir.path.name
                or await store.get_job(job["id"]) is not None
            ):
                continue
            job_id = str(job["id"])
            tag = (job.get("metadata") or {}).get(TAG_KEY)
            await store.insert_job(job, tag=None if tag is None else str(tag))
            await store.add_events(job_id, job_dir.events())
            for line in read_jsonl(job_dir.checkpoints)[0]:
                directory = job_dir.path / str(line.get("path") or "")
                if directory.is_dir() and line.get("path"):
                    metrics = {k: v for k, v in dict(line.get("metrics") or {}).items() if v is not None}
                    await store.add_checkpoint(
                        job_id,
                        step=int(line.get("step_number") or 0),
                        created_at=int(line.get("created_at") or 0),
                        metrics=metrics,
                        blob_key=await upload_dir(blobs, directory),
                    )
            model = await upload_dir(blobs, job_dir.model) if job_dir.model.is_dir() else None
            result = await upload_file(blobs, job_dir.metrics) if job_dir.metrics.is_file() else None
            await store.update_job(job_id, model_blob_key=model, result_blob_key=result)
            count += 1
        os.replace(jobs, jobs.with_name("jobs.imported"))
        logger.info("imported %d local jobs from %s", count, jobs)
