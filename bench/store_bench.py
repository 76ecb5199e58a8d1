"""CPU per job creation in the registry alone: `insert_intent` + `complete`, as `JobCreator`
runs them (each one committed transaction), on a fresh SQLite file — `--concurrent` creations
at a time (see `tunegate.server.store._inline`).

    .venv/bin/python bench/store_bench.py --concurrent 1
    .venv/bin/python bench/store_bench.py --concurrent 8
    .venv/bin/python bench/store_bench.py --concurrent 1 --keyed

`--keyed` gives each creation an idempotency key (the row then enters the unique
(owner, request_id) index). Prints CPU (this thread) and wall time per creation for each round.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

from tunegate.server.store import Database
from tunegate.server.store._records import JobRecord

_SNAPSHOT = {"object": "fine_tuning.job", "id": "ftjob-x", "status": "validating_files", "pad": "y" * 900}


async def _create(db: Database, now: int, keyed: bool) -> None:
    job_id = "ftjob-" + secrets.token_urlsafe(18)
    record = JobRecord(
        id=job_id,
        owner="key:" + "a" * 32,
        provider="openai",
        account_key="openai:key:" + "b" * 32,
        state="intent",
        status="validating_files",
        request={"model": "gpt-4o-mini-2024-07-18", "training_file": "file-abc123", "suffix": "bench"},
        request_hash="h" * 64,
        created_at=now,
        updated_at=now,
        lease_until=now + 60,
        attempted=True,
        request_id=secrets.token_hex(8) if keyed else None,
    )
    await db.jobs.insert_intent(record)
    native = "ftjob-" + secrets.token_hex(12)
    await db.jobs.complete(job_id, native_id=native, status="validating_files", snapshot=_SNAPSHOT, now=now)


async def main(concurrent: int, batches: int, rounds: int, keyed: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        db = await Database.open(f"sqlite:///{Path(scratch) / 'bench.db'}")
        try:
            for round_ in range(rounds):
                cpu, wall = time.thread_time(), time.perf_counter()
                for _ in range(batches):
                    now = int(time.time())
                    await asyncio.gather(*(_create(db, now, keyed) for _ in range(concurrent)))
                n = batches * concurrent
                print(
                    f"round {round_ + 1}: {concurrent} at a time, {n} creations: "
                    f"CPU {(time.thread_time() - cpu) / n * 1e6:.0f} µs, "
                    f"wall {(time.perf_counter() - wall) / n * 1e6:.0f} µs per creation"
                )
        finally:
            await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keyed", action="store_true", help="give each creation an idempotency key")
    args = parser.parse_args()
    asyncio.run(main(args.concurrent, args.batches, args.rounds, args.keyed))
