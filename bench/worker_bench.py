#!/usr/bin/env python3
"""Training workers on the procrastinate queue (issue 24): how fast an idle worker starts a
queued local job, and whether two workers training at once keep each job's throughput.

    # (a) queued → running on an idle worker, over --jobs jobs, one after another
    .venv/bin/python bench/worker_bench.py start --jobs 10
    .venv/bin/python bench/worker_bench.py start --jobs 10 --queue-only   # the queue alone
    # (b) one worker alone, then two workers with a job each (each worker on its own core)
    .venv/bin/python bench/worker_bench.py pair --examples 5000 --epochs 2

`start` and `pair` run a real deployment on this machine: a fresh PostgreSQL database (on
127.0.0.1:5432, dropped at the end), `tunegate server` + `tunegate edge` (pinned to the CPUs of
`--gateway-cpus`) and `tunegate worker` processes (`--worker-cpus`, one CPU each, trainer on one
thread), all from one config file with `[local] queue = "procrastinate"`. `start` creates jobs
through the REST API and polls each (every 10 ms) from the moment it is `queued` until it is
`running`. `--queue-only` measures the queue alone, in one process: `defer_async` of a train
task → the worker's runner called. `pair` reads each job's tokens/s from its "… tokens/s" event.
Only processes this script starts are stopped, by PID. One JSON line per run on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
from benchlib import free_port, pin
from psycopg import sql

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
TERMINAL = ("succeeded", "failed", "cancelled")


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh database; yields its `postgresql+asyncpg://` URL, drops it afterwards."""
    name = "tunegate_worker_bench_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dataset(examples: int) -> bytes:
    lines = []
    for i in range(examples):
        answer = f"The code word number {i} is {'abcdefghij'[i % 10] * (3 + i % 5)}."
        messages = [
            {"role": "system", "content": "You answer with the code word."},
            {"role": "user", "content": f"What is the code word number {i}?"},
            {"role": "assistant", "content": answer},
        ]
        lines.append(json.dumps({"messages": messages}))
    return ("\n".join(lines) + "\n").encode()


class Deployment:
    """`tunegate server` + `tunegate edge` + workers over one config file (see the module doc)."""

    def __init__(self, database_url: str, gateway_cpus: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tunegate-worker-bench-"))
        self.http_port, self.grpc_port = free_port(), free_port()
        self.config = self.dir / "tunegate.toml"
        self.config.write_text(
            f'data_dir = "{self.dir / "data"}"\n'
            f'[server]\ndatabase_url = "{database_url}"\nport = {self.grpc_port}\nmonitor_enabled = false\n'
            f'[edge]\nport = {self.http_port}\ngrpc_target = "127.0.0.1:{self.grpc_port}"\n'
            '[local]\nqueue = "procrastinate"\n'
            "[worker]\nheartbeat_seconds = 2\nstalled_seconds = 10\n"
        )
        self.gateway_cpus = gateway_cpus
        self.processes: list[subprocess.Popen[bytes]] = []
        self.base = f"http://127.0.0.1:{self.http_port}/v1"

    def spawn(
        self, role: str, *extra: str, cpus: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        tunegate = str(Path(sys.executable).parent / "tunegate")
        log = (self.dir / f"{role}-{len(self.processes)}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [*pin(cpus), tunegate, role, "--config", str(self.config), "--log-level", "WARNING", *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        )

    def start_gateway(self) -> None:
        self.spawn("server", cpus=self.gateway_cpus)
        self.spawn("edge", cpus=self.gateway_cpus)
        with httpx.Client(timeout=5) as client:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"http://127.0.0.1:{self.http_port}/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise SystemExit(f"the gateway did not start; logs in {self.dir}")

    def start_worker(self, cpu: str | None, name: str) -> None:
        # One core, one torch thread: the trainer subprocess inherits both.
        threads = {"TUNEGATE_TRAIN_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.spawn("worker", "--device", "cpu", "--concurrency", "1", "--name", name, cpus=cpu, env=threads)

    def close(self) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def create_job(client: httpx.Client, base: str, file_id: str, epochs: int) -> str:
    body = {
        "model": "tunegate-tiny",
        "training_file": file_id,
        "seed": 1,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs}}},
    }
    response = client.post(base + "/fine_tuning/jobs", json=body)
    response.raise_for_status()
    return str(response.json()["id"])


def wait_status(client: httpx.Client, base: str, job_id: str, wanted: tuple[str, ...], poll: float) -> str:
    while True:
        status = str(client.get(f"{base}/fine_tuning/jobs/{job_id}").json()["status"])
        if status in wanted or status in TERMINAL:
            return status
        time.sleep(poll)


def tokens_per_second(client: httpx.Client, base: str, job_id: str) -> float | None:
    events = client.get(f"{base}/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    for event in events:
        if match := re.search(r"([0-9.]+) tokens/s", event["message"]):
            return float(match.group(1))
    return None


def summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "min_ms": round(ordered[0], 1),
        "p50_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def start_latency(args: argparse.Namespace, database_url: str) -> dict[str, object]:
    deployment = Deployment(database_url, args.gateway_cpus)
    try:
        deployment.start_gateway()
        deployment.start_worker(args.worker_cpus.split(",")[0], "bench-a")
        base = deployment.base
        samples: list[float] = []
        with httpx.Client(timeout=60) as client:
            upload = client.post(
                base + "/files", data={"purpose": "fine-tune"}, files={"file": ("b.jsonl", dataset(20))}
            ).json()
            for _ in range(args.jobs):
                job_id = create_job(client, base, upload["id"], epochs=1)
                wait_status(client, base, job_id, ("queued", "running"), poll=0.01)
                queued = time.perf_counter()
                status = wait_status(client, base, job_id, ("running",), poll=0.01)
                started = time.perf_counter()
                if status != "running":
                    raise SystemExit(f"{job_id} ended {status} before running; logs in {deployment.dir}")
                samples.append((started - queued) * 1000)
                wait_status(client, base, job_id, TERMINAL, poll=0.2)  # the worker is idle again
        return {"bench": "start", "queued_to_running": summary(samples), "samples_ms": samples}
    finally:
        deployment.close()


async def _queue_only(database_url: str, jobs: int) -> dict[str, object]:
    from tunegate.server.providers.local._dispatch import Needs
    from tunegate.server.workers import QueueDispatcher, QueueWorker, WorkerSettings

    started: dict[str, float] = {}
    arrived = asyncio.Event()

    class Runner:
        async def validate(self, job_id: str) -> None:
            pass

        async def train(self, job_id: str) -> None:
            started[job_id] = time.perf_counter()
            arrived.set()

    worker = QueueWorker(database_url, Runner(), WorkerSettings(device="cpu", memory_mb=4096))
    dispatcher = QueueDispatcher(database_url)
    await dispatcher.start()
    await worker.start()
    samples: list[float] = []
    try:
        for i in range(jobs):
            await asyncio.sleep(0.5)  # the worker is idle, waiting on LISTEN
            arrived.clear()
            before = time.perf_counter()
            await dispatcher.submit_train(f"ftjob-local-bench{i}", Needs())
            await asyncio.wait_for(arrived.wait(), 30)
            samples.append((started[f"ftjob-local-bench{i}"] - before) * 1000)
    finally:
        await worker.stop()
        await dispatcher.aclose()
    return {"bench": "start-queue-only", "defer_to_runner": summary(samples), "samples_ms": samples}


def pair(args: argparse.Namespace, database_url: str) -> dict[str, object]:
    cpus = args.worker_cpus.split(",")
    if len(cpus) < 2:
        raise SystemExit("pair needs two --worker-cpus")
    deployment = Deployment(database_url, args.gateway_cpus)
    try:
        deployment.start_gateway()
        deployment.start_worker(cpus[0], "bench-w0")
        base = deployment.base
        with httpx.Client(timeout=60) as client:
            upload = client.post(
                base + "/files",
                data={"purpose": "fine-tune"},
                files={"file": ("b.jsonl", dataset(args.examples))},
            ).json()
            alone = create_job(client, base, upload["id"], args.epochs)
            if wait_status(client, base, alone, TERMINAL, poll=0.5) != "succeeded":
                raise SystemExit(f"the solo job failed; logs in {deployment.dir}")
            solo = tokens_per_second(client, base, alone)

            deployment.start_worker(cpus[1], "bench-w1")
            time.sleep(3)  # both workers registered and listening
            jobs = [create_job(client, base, upload["id"], args.epochs) for _ in range(2)]
            for job_id in jobs:
                if wait_status(client, base, job_id, TERMINAL, poll=0.5) != "succeeded":
                    raise SystemExit(f"{job_id} failed; logs in {deployment.dir}")
            together = [tokens_per_second(client, base, job_id) for job_id in jobs]
        worst = min(t for t in together if t is not None) if all(together) else None
        return {
            "bench": "pair",
            "examples": args.examples,
            "epochs": args.epochs,
            "solo_tokens_per_s": solo,
            "pair_tokens_per_s": together,
            "worst_pair_over_solo": round(worst / solo, 3) if worst and solo else None,
        }
    finally:
        deployment.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", choices=("start", "pair"))
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--queue-only", action="store_true")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--gateway-cpus", default=None, help="taskset CPUs of server + edge")
    parser.add_argument("--worker-cpus", default="0,1", help="one CPU per worker, comma-separated")
    args = parser.parse_args()
    with database() as url:
        if args.bench == "start" and args.queue_only:
            record = asyncio.run(_queue_only(url, args.jobs))
        elif args.bench == "start":
            record = start_latency(args, url)
        else:
            record = pair(args, url)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
