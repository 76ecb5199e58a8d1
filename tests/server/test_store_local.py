"""`LocalStore`: the local provider's rows on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tunegate.server.store import Database, LocalFileRecord


async def test_jobs_events_checkpoints_and_files_round_trip(tmp_path: Path, database_url: str | None) -> None:
    db = await Database.open(database_url or f"sqlite:///{tmp_path / 'local.db'}")
    store = db.local
    try:
        for n in range(3):
            job = {"id": f"ftjob-local-{n}-{tmp_path.name[-6:]}", "created_at": 100 + n, "status": "queued"}
            await store.insert_job(job, tag=f"tag-{n}-{tmp_path.name}")
        ids = [f"ftjob-local-{n}-{tmp_path.name[-6:]}" for n in range(3)]
        page = await store.list_jobs(limit=1000)  # the session's PostgreSQL database is shared
        assert page is not None and [j["id"] for j in page[0] if j["id"] in ids] == ids[::-1]
        after = await store.list_jobs(limit=1, after=ids[2])
        assert after is not None and [j["id"] for j in after[0]] == [ids[1]]
        assert await store.list_jobs(limit=2, after="nope") is None
        found = await store.find_by_tag(f"tag-1-{tmp_path.name}")
        assert found is not None and found.id == ids[1]

        assert await store.update_job(ids[0], {"status": "paused"}, expect=["running"]) is None
        paused = await store.update_job(
            ids[0], {"status": "paused"}, expect=["queued"], control="pause", event={"message": "Job paused"}
        )
        assert paused is not None and paused.status == "paused" and paused.control == "pause"
        await store.add_events(
            ids[0], [{"message": "a", "created_at": 5}, {"message": "b", "data": {"x": 1}}]
        )
        events = await store.events(ids[0], limit=10)
        assert [(e.seq, e.message) for e in events] == [(3, "b"), (2, "a"), (1, "Job paused")]
        assert events[0].data == {"x": 1}
        assert [e.seq for e in await store.events(ids[0], limit=1, before=3)] == [2]

        assert (
            await store.add_checkpoint(ids[0], step=4, created_at=1, metrics={"step": 4}, blob_key="k" * 10)
            == 1
        )
        assert (
            await store.add_checkpoint(ids[0], step=8, created_at=2, metrics={"step": 8}, blob_key="j" * 10)
            == 2
        )
        assert [c.step for c in await store.checkpoints(ids[0])] == [8, 4]

        file = LocalFileRecord(
            id="file-local-x",
            filename="t.jsonl",
            purpose="fine-tune",
            bytes=3,
            created_at=1,
            blob_key="b" * 10,
        )
        await store.insert_file(file)
        assert await store.get_file("file-local-x") == file
        assert await store.delete_file("file-local-x")
        assert await store.get_file("file-local-x") is None
        assert [j.id for j in await store.unfinished() if j.id in ids] == [ids[1], ids[2]]
    finally:
        await db.close()
