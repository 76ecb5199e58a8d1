"""The job monitor: jobs on held credentials move with no client asking; replicas on one
PostgreSQL database split the jobs and never poll one twice at once; a survivor takes over."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
import httpx
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tunegate.server import GatewayServer, ServerConfig
from tunegate.server.ids import new_id
from tunegate.server.jobs import JobMonitor, MonitorSettings
from tunegate.server.jobs._monitor import next_interval
from tunegate.server.jobs._service import PollOutcome
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, RoutingConfig, VirtualKey
from tunegate.server.store import Database, JobRecord, PollRepository
from tunegate.server.store._schema import job_polls
from tunegate.v1 import fine_tuning_pb2, fine_tuning_pb2_grpc

from tests.fakes import FakeOpenAI, start_fake_openai_in_thread
from tests.server.conftest import FakeClock
from tests.server.support import poll_counts

TRAINING = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n' * 10
SECRET = "sk-monitor-team"
MASTER = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # 32 bytes, shared by the replicas


def test_the_cadence() -> None:
    s = MonitorSettings(min_interval=10, max_interval=300, backoff=2)
    assert next_interval(s, 0, PollOutcome("queued", "queued")) == 10  # first poll
    assert next_interval(s, 10, PollOutcome("queued", "running")) == 10  # a change: stay close
    assert next_interval(s, 10, PollOutcome("running", "running")) == 20  # quiet: slow down
    assert next_interval(s, 200, PollOutcome("running", "running")) == 300  # capped
    assert (
        next_interval(s, 10, PollOutcome("running", "running", retry_after=120, error="rate_limited")) == 120
    )
    assert next_interval(s, 10, PollOutcome("running", "running", error="upstream_error")) == 20
    assert next_interval(s, 10, PollOutcome("running", "succeeded")) is None
    assert next_interval(s, 10, PollOutcome(None, None)) is None
    with pytest.raises(ValueError):
        MonitorSettings(min_interval=5, max_interval=1)


def _config(
    tmp_path: Path, fake: FakeOpenAI, database_url: str | None, name: str, **extra: Any
) -> ServerConfig:
    providers = {**DEFAULT_PROVIDERS, "openai": ProviderSettings(base_url=fake.base_url, timeout_seconds=5.0)}
    routing = RoutingConfig(
        providers=providers,
        virtual_keys={"team": VirtualKey(name="team", provider="openai", api_key_env="TG_MONITOR_KEY")},
    )
    settings: dict[str, Any] = {
        "data_dir": tmp_path / name,
        "port": 0,
        "database_url": database_url,
        "routing": routing,
        "grace_seconds": 0.2,
        "monitor_tick_seconds": 0.05,
        "monitor_min_interval_seconds": 0.3,
        "monitor_max_interval_seconds": 0.3,
        "monitor_lease_seconds": 1.0,
        **extra,
    }
    return ServerConfig(**settings)


async def _create_jobs(server: GatewayServer, fake: FakeOpenAI, count: int) -> list[str]:
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {SECRET}"}
    ) as http:
        answer = await http.post(
            "/files", files={"file": ("t.jsonl", TRAINING)}, data={"purpose": "fine-tune"}
        )
        answer.raise_for_status()
        native_file = answer.json()["id"]
    stub = fine_tuning_pb2_grpc.FineTuningStub(cast(grpc.aio.Channel, server.channel()))
    ids = []
    for _ in range(count):
        job = await stub.CreateFineTuningJob(
            fine_tuning_pb2.CreateFineTuningJobRequest(
                model="gpt-4o-mini-2024-07-18", training_file=native_file
            ),
            metadata=(("x-portkey-virtual-key", "team"),),
        )
        ids.append(job.id)
    return ids


def _native_ids(fake: FakeOpenAI, gateway_ids: list[str]) -> dict[str, str]:
    found = {
        (j.metadata or {}).get("tunegate_job_id"): j.id for j in fake.call(lambda: list(fake.jobs.values()))
    }
    return {found[g]: g for g in gateway_ids}


def _polls(fake: FakeOpenAI, natives: dict[str, str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = defaultdict(list)
    for request in fake.call(lambda: list(fake.requests)):
        if request.method == "GET":
            job = request.path.rstrip("/").rsplit("/", 1)[-1]
            if job in natives:
                times[job].append(request.at)
    return times


@pytest.fixture
def fake_openai() -> Any:
    os.environ["TG_MONITOR_KEY"] = SECRET
    fake = start_fake_openai_in_thread(steps_per_get=1, steps_per_list=1, api_keys={SECRET})
    yield fake
    fake.close()


def _listings(fake: FakeOpenAI) -> list[float]:
    """When the fake's job listing was read."""
    requests = fake.call(lambda: list(fake.requests))
    return [r.at for r in requests if r.method == "GET" and r.path.rstrip("/").endswith("/fine_tuning/jobs")]


@pytest.mark.parametrize("swept", [True, False], ids=["swept", "one-by-one"])
async def test_jobs_reach_succeeded_with_no_client_polling(
    tmp_path: Path, fake_openai: FakeOpenAI, database_url: str | None, swept: bool
) -> None:
    server = await GatewayServer.start(_config(tmp_path, fake_openai, database_url, "one"))
    try:
        assert server.monitor is not None
        if not swept:  # an account's jobs are read from its listing only from this many on
            server.monitor.settings = dataclasses.replace(server.monitor.settings, sweep_min_jobs=100)
        ids = await _create_jobs(server, fake_openai, 5)
        deadline = time.monotonic() + 30
        while True:
            records = [await server.database.jobs.get_any(i) for i in ids]
            if all(r is not None and r.status == "succeeded" for r in records):
                break
            assert time.monotonic() < deadline, [r.status for r in records if r is not None]
            await asyncio.sleep(0.1)
        assert server.monitor.polled >= 5
        natives = _native_ids(fake_openai, ids)
        reads = {job: len(times) for job, times in _polls(fake_openai, natives).items()}
        listings = len(_listings(fake_openai))
        if swept:  # the jobs were read a page at a time: fewer reads than polls
            assert listings >= 1 and sum(reads.values()) + listings < server.monitor.polled
        else:
            assert listings == 0 and len(reads) == 5
        await asyncio.sleep(1.0)  # terminal: never polled again
        assert {job: len(times) for job, times in _polls(fake_openai, natives).items()} == reads
        assert len(_listings(fake_openai)) == listings
        assert fake_openai.violations == []
    finally:
        await server.stop(0)


def _server_process(tmp_path: Path, name: str, config: Path, grpc_port: int) -> subprocess.Popen[bytes]:
    """`tunegate server` in its own process (its log in `<name>.log`)."""
    log = (tmp_path / f"{name}.log").open("wb")
    command = [str(Path(sys.executable).parent / "tunegate"), "server", "--config", str(config)]
    command += ["--data-dir", str(tmp_path / name), "--grpc-port", str(grpc_port)]
    env = {**os.environ, "TG_MONITOR_KEY": SECRET, "TUNEGATE_MASTER_KEY": MASTER}
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _ready(port: int) -> None:
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while True:
            try:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.RpcError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)


def test_two_server_processes_split_200_jobs_and_a_survivor_takes_over(
    tmp_path: Path, postgres_url: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.steps_per_get = fake_openai.steps_per_list = 0  # the jobs keep running
    config = tmp_path / "tunegate.toml"
    config.write_text(
        f"""
[server]
database_url = "{postgres_url}"
monitor_min_interval_seconds = 1.0
monitor_max_interval_seconds = 1.0
monitor_lease_seconds = 2.0
monitor_tick_seconds = 0.05

[providers.openai]
base_url = "{fake_openai.base_url}"

[virtual_keys.team]
provider = "openai"
api_key_env = "TG_MONITOR_KEY"
"""
    )
    ports = [_free_port(), _free_port()]
    procs = [_server_process(tmp_path, name, config, port) for name, port in zip("ab", ports, strict=True)]
    try:
        for port in ports:
            _ready(port)
        native_file = httpx.post(
            f"{fake_openai.base_url}/files",
            headers={"Authorization": f"Bearer {SECRET}"},
            files={"file": ("t.jsonl", TRAINING)},
            data={"purpose": "fine-tune"},
        ).json()["id"]
        with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
            stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
            request = fine_tuning_pb2.CreateFineTuningJobRequest(
                model="gpt-4o-mini-2024-07-18", training_file=native_file
            )
            created_at = time.monotonic()
            ids = [
                stub.CreateFineTuningJob(
                    request, metadata=(("x-portkey-virtual-key", "team"),), timeout=30
                ).id
                for _ in range(200)
            ]
        natives = _native_ids(fake_openai, ids)
        time.sleep(4.0)
        procs[0].kill()  # no shutdown: its leases are left to expire
        procs[0].wait(timeout=10)
        killed_at = time.monotonic()
        at_kill = poll_counts(postgres_url)
        time.sleep(5.0)
        at_end = poll_counts(postgres_url)
        ended_at = time.monotonic()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    # The jobs are read from the account's listing (a page holds many), and alone only when a
    # walk missed them; a job read alone is never read twice within an interval.
    listings = _listings(fake_openai)
    assert listings, "the replicas did not read the listing"
    for job, times in _polls(fake_openai, natives).items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= 0.9 for gap in gaps), (job, gaps)
    # Polled by one replica at a time, at the configured 1 s (a sweep may take a job up to half
    # an interval early, once, as it joins its account's round): never twice per interval.
    assert set(ids) <= set(at_end)  # (the session database also holds other tests' jobs)
    for job in ids:
        assert at_end[job] <= ended_at - created_at + 3, (job, at_end[job])
        assert at_end[job] - at_kill[job] >= 1, job  # the survivor follows it
        assert at_end[job] - at_kill[job] <= ended_at - killed_at + 2, (job, at_kill[job], at_end[job])
    assert fake_openai.violations == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_per_call_credentials_are_not_followed(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    server = await GatewayServer.start(
        _config(tmp_path, fake_openai, None, "percall"), clock=FakeClock(time.time())
    )
    try:
        stub = fine_tuning_pb2_grpc.FineTuningStub(cast(grpc.aio.Channel, server.channel()))
        async with httpx.AsyncClient(
            base_url=fake_openai.base_url, headers={"Authorization": f"Bearer {SECRET}"}
        ) as h:
            native_file = (
                await h.post("/files", files={"file": ("t.jsonl", TRAINING)}, data={"purpose": "fine-tune"})
            ).json()["id"]
        job = await stub.CreateFineTuningJob(
            fine_tuning_pb2.CreateFineTuningJobRequest(
                model="gpt-4o-mini-2024-07-18", training_file=native_file
            ),
            metadata=(("x-portkey-provider", "openai"), ("authorization", f"Bearer {SECRET}")),
        )
        await asyncio.sleep(1.0)
        assert server.monitor is not None and await server.database.polls.polls(job.id) == 0
    finally:
        await server.stop(0)


async def test_a_lease_taken_on_a_stale_read_of_a_rescheduled_job_is_refused(
    tmp_path: Path, database_url: str | None
) -> None:
    """The race two replicas ran into (bench/monitor_bench.py): replica B's claim SELECT read
    the job as due, replica A then leased, polled and rescheduled it, and B's lease must not
    take it again."""
    database = await Database.open(database_url or f"sqlite+aiosqlite:///{tmp_path / 'polls.db'}")
    try:
        now = 1_750_000_000
        request = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-x"}
        job = await database.jobs.insert_intent(
            JobRecord(
                id=new_id("ftjob-"),
                owner="key:a",
                provider="openai",
                account_key="vk:team",
                state="created",
                status="running",
                request=request,
                request_hash="0" * 64,
                created_at=now - 100,
                updated_at=now - 100,
                native_id="ftjob-native",
            )
        )
        claim: dict[str, Any] = {
            "lease_ms": 60_000,
            "limit": 10,
            "terminal": ("succeeded", "failed", "cancelled"),
            "followed": (),
            "prefixes": ("vk:",),
        }
        now_ms = now * 1000
        assert await database.polls.claim(now_ms=now_ms, holder="a", **claim) == [(job.id, 0.0)]
        await database.polls.schedule_many("a", [(job.id, now_ms + 60_000, 60.0)])
        async with database.engine.begin() as conn:  # B's lease, after its stale read
            at = now_ms + 500
            stale = await PollRepository._lease(conn, [job.id], at, at + 60_000, "b")
        assert not stale
        assert await database.polls.claim(now_ms=now_ms + 500, holder="b", **claim) == []
        assert await database.polls.claim(now_ms=now_ms + 60_000, holder="b", **claim) == [(job.id, 60.0)]
    finally:
        await database.close()


async def test_a_refused_listing_reschedules_its_jobs_after_retry_after(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """A 429 on the account's listing cuts the sweep: its jobs are not then read one by one (that
    would hammer a provider that just refused), but rescheduled after `Retry-After`."""
    fake_openai.steps_per_get = fake_openai.steps_per_list = 0
    clock = FakeClock(time.time())
    server = await GatewayServer.start(
        _config(tmp_path, fake_openai, None, "refused", monitor_enabled=False), clock=clock
    )
    try:
        ids = await _create_jobs(server, fake_openai, 4)
        settings = MonitorSettings(min_interval=10, max_interval=300)
        monitor = JobMonitor(server.jobs, server.database.polls, settings, clock=clock)
        clock.advance(11)  # a new job is first polled `min_interval` after its creation
        fake_openai.inject("429", path=r"/fine_tuning/jobs$", method="GET", retry_after=120)
        before = len(fake_openai.call(lambda: list(fake_openai.requests)))
        assert await monitor.tick() == 4
        tried = fake_openai.call(lambda: list(fake_openai.requests))[before:]
        assert [(r.method, r.path) for r in tried] == [("GET", "/v1/fine_tuning/jobs")]
        async with server.database.engine.connect() as conn:
            rows = await conn.execute(sa.select(job_polls.c.job_id, job_polls.c.next_at))
            next_at = dict(rows.all())
        assert set(next_at) == set(ids)
        assert all(at / 1000 - clock.now > 119.9 for at in next_at.values())
        assert await monitor.tick() == 0  # nothing due before then
        clock.advance(131)  # (polls fall on the account's grid: up to min_interval after Retry-After)
        assert await monitor.tick() == 4  # swept again: one page holds them all
        assert len(_listings(fake_openai)) == 2
    finally:
        await server.stop(0)
