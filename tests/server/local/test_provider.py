"""`LocalProvider`'s state machine with a scripted stand-in for the training worker (no torch):
validation, the bounded queue, cancel/pause/resume, outcomes, and restart recovery."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tunegate.server.errors import FailedPrecondition, InvalidArgument
from tunegate.server.providers import Account, LocalProvider, LocalSettings, SchedulerSettings
from tunegate.server.store import Database

ACCOUNT = Account(provider="local", key="local", base_url="", credential="")

# Stands in for `python -m tunegate.server.providers.local.worker <job_dir>`: writes an event, then waits
# for `control` (pause/cancel) or for `<root>/release`, and writes its outcome.
FAKE_WORKER = """
import json, pathlib, sys, time
job = pathlib.Path(sys.argv[-1])
spec = json.loads((job / "spec.json").read_text())
with (job / "events.jsonl").open("a") as f:
    message = "resumed" if spec["resume"] else "step 1"
    event = {"created_at": 1, "level": "info", "message": message, "type": "message", "data": None}
    f.write(json.dumps(event) + "\\n")
(job / "progress.json").write_text(json.dumps({"step": 1, "estimated_finish": 2000000000}))
while True:
    control = job / "control"
    if control.exists():
        word = control.read_text().strip()
        if word == "pause":
            (job / "checkpoints").mkdir(exist_ok=True)
            (job / "checkpoints" / "step-1").mkdir(exist_ok=True)
        status = {"pause": "paused", "cancel": "cancelled"}[word]
        break
    if (job.parent.parent / "release").exists():
        (job / "step_metrics.csv").write_text("step,train_loss\\n1,1.0\\n")
        (job / "model").mkdir(exist_ok=True)
        (job / "model" / "config.json").write_text("{}")
        status = "succeeded"
        break
    time.sleep(0.02)
(job / "outcome.json").write_text(json.dumps({"status": status, "trained_tokens": 42, "error": None}))
"""

GOOD = "".join(
    json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]})
    + "\n"
    for i in range(10)
)


@pytest.fixture
def worker(tmp_path: Path) -> str:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    launcher = tmp_path / "python"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


_OPEN: list[LocalProvider] = []


@pytest.fixture(autouse=True)
async def close_providers() -> AsyncIterator[None]:
    """Stop every provider's workers even when a test fails midway."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


def make(tmp_path: Path, worker: str, concurrency: int = 1) -> LocalProvider:
    settings = SchedulerSettings(concurrency=concurrency, python=worker, poll_interval=0.02, stop_grace=2.0)
    provider = LocalProvider(LocalSettings(root=tmp_path / "local", scheduler=settings))
    _OPEN.append(provider)
    return provider


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def upload(provider: LocalProvider, text: str) -> str:
    data = text.encode()
    native = await provider.upload_file(
        ACCOUNT, filename="t.jsonl", purpose="fine-tune", size=len(data), chunks=chunks(data)
    )
    return native.id


async def until(provider: LocalProvider, job_id: str, *statuses: str) -> dict[str, Any]:
    for _ in range(500):
        job = await provider.get_job(ACCOUNT, job_id)
        if job["status"] in statuses:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job_id} is {job['status']}, not {statuses}")


async def create(provider: LocalProvider, file_id: str, tag: str = "ftjob-tag") -> str:
    job = await provider.create_job(
        ACCOUNT, {"model": "tunegate-tiny", "training_file": file_id, "suffix": "s"}, tag=tag
    )
    assert job["status"] == "validating_files" and job["id"].startswith("ftjob-local-")
    return str(job["id"])


async def test_bad_data_fails_in_validation(tmp_path: Path, worker: str) -> None:
    provider = make(tmp_path, worker)
    lines = GOOD.splitlines()
    lines[3] = "{not json"
    job_id = await create(provider, await upload(provider, "\n".join(lines)))
    job = await until(provider, job_id, "failed")
    assert job["error"]["param"] == "training_file" and "Line 4" in job["error"]["message"]
    await provider.aclose()


async def test_queue_runs_one_at_a_time_and_succeeds(tmp_path: Path, worker: str) -> None:
    provider = make(tmp_path, worker)
    file_id = await upload(provider, GOOD)
    first, second = await create(provider, file_id, "t1"), await create(provider, file_id, "t2")
    await until(provider, first, "running", "queued")
    await until(provider, second, "running", "queued")
    statuses = {(await provider.get_job(ACCOUNT, j))["status"] for j in (first, second)}
    assert statuses == {"running", "queued"}  # one slot
    assert (await provider.find_job_by_tag(ACCOUNT, "t2", created_after=0) or {}).get("id") == second
    (tmp_path / "local" / "release").touch()
    for job_id in (first, second):
        job = await until(provider, job_id, "succeeded")
        assert job["fine_tuned_model"] == f"ft:tunegate-tiny:local:s:{job_id.removeprefix('ftjob-local-')}"
        assert job["trained_tokens"] == 42 and job["hyperparameters"]["n_epochs"] == 3
        (result,) = job["result_files"]
        download = await provider.download_file(ACCOUNT, result)
        assert b"".join([c async for c in download.chunks]).startswith(b"step,")
    events = await provider.list_events(ACCOUNT, first, limit=2, page_token=None)
    assert events.has_more and events.data[0]["message"] == "The job has successfully completed"
    rest = await provider.list_events(ACCOUNT, first, limit=100, page_token=events.next_token)
    assert "step 1" in [e["message"] for e in rest.data]
    assert rest.data[-1]["id"].endswith("-1")  # ids are line numbers: stable
    await provider.aclose()


async def test_cancel_pause_resume(tmp_path: Path, worker: str) -> None:
    provider = make(tmp_path, worker, concurrency=2)
    file_id = await upload(provider, GOOD)
    doomed, paused = await create(provider, file_id, "a"), await create(provider, file_id, "b")
    await until(provider, doomed, "running")
    assert (await provider.cancel_job(ACCOUNT, doomed))["status"] == "cancelled"
    with pytest.raises(FailedPrecondition):
        await provider.cancel_job(ACCOUNT, doomed)
    await until(provider, paused, "running")
    assert (await provider.pause_job(ACCOUNT, paused))["status"] == "paused"
    assert not provider.dispatcher.is_running(paused)  # type: ignore[union-attr]
    assert (await provider.resume_job(ACCOUNT, paused))["status"] in ("queued", "running")
    await until(provider, paused, "running")
    spec = json.loads((tmp_path / "local" / "work" / paused / "spec.json").read_text())
    assert spec["resume"] is True
    (tmp_path / "local" / "release").touch()
    await until(provider, paused, "succeeded")
    await provider.aclose()


async def test_restart_resumes_or_fails_interrupted_jobs(tmp_path: Path, worker: str) -> None:
    provider = make(tmp_path, worker)
    file_id = await upload(provider, GOOD)
    one, two = await create(provider, file_id, "r"), await create(provider, file_id, "q")
    await until(provider, one, "running", "queued")
    await until(provider, two, "running", "queued")
    # Jobs queue in the order their validation finished: either may hold the one slot.
    if (await provider.get_job(ACCOUNT, one))["status"] == "running":
        running, queued = one, two
    else:
        running, queued = two, one
    await until(provider, queued, "queued")
    await provider.aclose()  # the worker is paused (it checkpoints) and stopped; the job stays running

    # A third job found running with no checkpoint cannot resume.
    orphan = "ftjob-local-orphan"
    database = await Database.open(f"sqlite:///{tmp_path / 'local' / 'local.db'}")
    try:
        stopped = await database.local.get_job(running)
        assert stopped is not None and stopped.status == "running"
        assert await database.local.checkpoints(running)  # the pause at shutdown left one
        job = await database.local.get_job(queued)
        assert job is not None
        await database.local.insert_job({**job.body, "id": orphan, "status": "running"}, tag=None)
    finally:
        await database.close()

    restarted = make(tmp_path, worker)
    await restarted.start()
    failed = await restarted.get_job(ACCOUNT, orphan)
    assert failed["status"] == "failed" and failed["error"]["code"] == "interrupted"
    (tmp_path / "local" / "release").touch()
    for job_id in (running, queued):
        await until(restarted, job_id, "succeeded")
    await restarted.aclose()


def test_check_request_refuses_unknown_models(tmp_path: Path) -> None:
    provider = LocalProvider(LocalSettings(root=tmp_path))
    provider.check_request(ACCOUNT, {"model": "tunegate-tiny"})
    for model in ("gpt-4o-mini", f"local:{tmp_path / 'missing'}"):
        with pytest.raises(InvalidArgument) as error:
            provider.check_request(ACCOUNT, {"model": model})
        assert error.value.param == "model"


def test_a_base_model_cannot_be_read_from_the_gateways_data_directory(tmp_path: Path) -> None:
    """Every owner's tuned weights live under the data directory; a `local:` base model there
    would let one owner train on (and probe) another's model."""
    data_dir, outside = tmp_path / "data", tmp_path / "models" / "mine"
    tuned = data_dir / "local" / "jobs" / "ftjob-local-x" / "model"
    tuned.mkdir(parents=True)
    outside.mkdir(parents=True)
    provider = LocalProvider(LocalSettings(root=data_dir / "local"))
    provider.check_request(ACCOUNT, {"model": f"local:{outside}"})
    for model in (
        f"local:{tuned}",
        f"local:{outside}/../../data/local/jobs/ftjob-local-x/model",
        f"local:{data_dir}",
    ):
        with pytest.raises(InvalidArgument) as error:
            provider.check_request(ACCOUNT, {"model": model})
        assert error.value.param == "model" and "data directory" in error.value.message


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"device": "tpu"}, "provider_options.device"),
        ({"memory_mb": 0}, "provider_options.memory_mb"),
        ({"memory_mb": "lots"}, "provider_options.memory_mb"),
        ({"memory_mb": 1.5}, "provider_options.memory_mb"),
    ],
)
def test_check_request_refuses_a_machine_no_worker_can_be(
    tmp_path: Path, options: dict[str, Any], param: str
) -> None:
    provider = LocalProvider(LocalSettings(root=tmp_path / "local"))
    with pytest.raises(InvalidArgument) as caught:
        provider.check_request(ACCOUNT, {"model": "tunegate-tiny", "provider_options": options})
    assert caught.value.param == param


async def test_the_machine_a_job_asks_for_is_what_its_training_is_queued_with(
    tmp_path: Path, worker: str
) -> None:
    from tunegate.server.providers.local import Needs, needs_of

    provider = make(tmp_path, worker)
    file_id = await upload(provider, GOOD)
    request = {
        "model": "tunegate-tiny",
        "training_file": file_id,
        "provider_options": {"device": "cuda", "memory_mb": 16000.0},  # as a gRPC Struct sends it
    }
    provider.check_request(ACCOUNT, request)
    job = await provider.create_job(ACCOUNT, request, tag="t-needs")
    record = await provider.store.get_job(job["id"])
    assert record is not None and needs_of(record.body) == Needs(device="cuda", memory_mb=16000)
    plain = await create(provider, file_id, "t-plain")
    record = await provider.store.get_job(plain)
    assert record is not None and needs_of(record.body) == Needs()
