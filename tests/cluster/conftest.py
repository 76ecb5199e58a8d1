"""A real multi-process cluster for end-to-end tests: PostgreSQL, moto's S3, a fake OpenAI, and
`tunegate server` / `tunegate edge` processes started from the installed `tunegate` command.

`start_cluster` writes one config file for every process (as an operator would), starts each
process on free loopback ports, waits until each answers its health check, and stops them by
PID at the end. Logs go to `<tmp>/<name>.log` and are printed when a process fails to start.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moto.server import ThreadedMotoServer

from tests.e2e.sdk import openai_client
from tests.fakes import FakeOpenAI, start_fake_openai_in_thread
from tests.server.conftest import fresh_postgres_database

PROVIDER_SECRET = "sk-cluster-team"
"""The fake OpenAI's only accepted key, reached through the `team` virtual key."""
MASTER_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
"""32 bytes (base64): every replica must seal and open secrets with the same master key."""
BUCKET = "tunegate-cluster"
_TUNEGATE = str(Path(sys.executable).parent / "tunegate")
_START_SECONDS = 60.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, randomly named PostgreSQL database for one cluster (dropped after)."""
    yield from fresh_postgres_database("tunegate_cluster_")


@dataclass(frozen=True)
class S3:
    """moto's S3 server and the bucket the cluster stores blobs in."""

    endpoint_url: str
    bucket: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """What a process needs to reach it through botocore's default credential chain."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
        }


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free loopback port with an empty bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        store = S3(endpoint_url=f"http://{host}:{port}", bucket=BUCKET)
        client = boto3.client("s3", endpoint_url=store.endpoint_url, region_name=store.region, **_keys(store))
        client.create_bucket(Bucket=store.bucket)
        yield store
    finally:
        server.stop()


def _keys(store: S3) -> dict[str, str]:
    env = store.env()
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fake OpenAI whose jobs move only when a test advances them (no step per read)."""
    fake = start_fake_openai_in_thread(steps_per_get=0, steps_per_list=0, api_keys={PROVIDER_SECRET})
    yield fake
    fake.close()


@dataclass
class Process:
    """One `tunegate` process of the cluster."""

    name: str
    role: str
    port: int
    """The gRPC port of a server, the HTTP port of an edge."""
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        """An edge's OpenAI-compatible base URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, like a machine lost."""
        self.popen.kill()
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


@dataclass
class Cluster:
    """The running processes, by role, and what they share."""

    config: Path
    database_url: str
    servers: list[Process] = field(default_factory=list)
    edges: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)

    def clients(self, **headers: str) -> list[openai.OpenAI]:
        """One official-SDK client per edge (spec-checked), all with one gateway credential, so
        one owner; `headers` go with every request."""
        api_key = "sk-cluster-" + secrets.token_hex(8)
        return [
            openai_client(edge.base_url, api_key, max_retries=0, default_headers=headers)
            for edge in self.edges
        ]

    def stop(self) -> None:
        for process in [*self.edges, *self.servers, *self.workers]:
            process.stop()


def _config_text(
    *, database_url: str, fake: FakeOpenAI, blobs_url: str | None, s3: S3 | None, queue: bool
) -> str:
    text = f"""
[server]
database_url = "{database_url}"
monitor_min_interval_seconds = 1.0
monitor_max_interval_seconds = 1.0
monitor_lease_seconds = 2.0
monitor_tick_seconds = 0.05
local_train_threads = 1

[providers.openai]
base_url = "{fake.base_url}"
timeout_seconds = 10

[virtual_keys.team]
provider = "openai"
api_key_env = "TG_CLUSTER_OPENAI_KEY"
"""
    if queue:
        # Workers beat every second and count as dead after 3 silent seconds, so a test sees a
        # SIGKILLed worker's job taken over in seconds rather than the default 30.
        text += '\n[local]\nqueue = "procrastinate"\n'
        text += "\n[worker]\nheartbeat_seconds = 1\nstalled_seconds = 3\nstalled_check_seconds = 1\n"
    if blobs_url is not None:
        text += f'\n[blobs]\nurl = "{blobs_url}"\n'
        if s3 is not None:
            text += f'endpoint_url = "{s3.endpoint_url}"\nregion = "{s3.region}"\n'
    return text


def _spawn(tmp_path: Path, name: str, role: str, port: int, args: list[str], env: dict[str, str]) -> Process:
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen([_TUNEGATE, role, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    return Process(name=name, role=role, port=port, popen=popen, log=log)


def _wait_healthy(process: Process) -> None:
    """Until the process answers its health check; fails with its log if it exits or hangs."""
    deadline = time.monotonic() + _START_SECONDS
    while True:
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited:\n{process.log.read_text(errors='replace')}")
        if _healthy(process):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.name} never healthy:\n{process.log.read_text(errors='replace')}")
        time.sleep(0.1)


def _healthy(process: Process) -> bool:
    if process.role == "edge":
        try:
            return httpx.get(f"http://127.0.0.1:{process.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    with grpc.insecure_channel(f"127.0.0.1:{process.port}") as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return True
        except grpc.RpcError:
            return False


@pytest.fixture
def start_cluster(tmp_path: Path, postgres_url: str, fake_openai: FakeOpenAI) -> Iterator[Any]:
    """`start_cluster(servers=2, edges=2, blobs_url=None, s3=None, workers=0)` →
    a running `Cluster`: edge i in front of server i % servers; with `workers`, local jobs go
    through the procrastinate queue to that many `tunegate worker` processes (CPU, one trainer
    thread each); every process stopped after."""
    clusters: list[Cluster] = []

    def start(
        *,
        servers: int = 2,
        edges: int = 2,
        blobs_url: str | None = None,
        s3: S3 | None = None,
        workers: int = 0,
    ) -> Cluster:
        config = tmp_path / "tunegate.toml"
        config.write_text(
            _config_text(
                database_url=postgres_url, fake=fake_openai, blobs_url=blobs_url, s3=s3, queue=workers > 0
            )
        )
        env = {
            **os.environ,
            "TG_CLUSTER_OPENAI_KEY": PROVIDER_SECRET,
            "TUNEGATE_MASTER_KEY": MASTER_KEY,
            **(s3.env() if s3 else {}),
        }
        cluster = Cluster(config=config, database_url=postgres_url)
        clusters.append(cluster)
        common = ["--config", str(config)]
        for i in range(servers):
            name = f"server-{'abcdefgh'[i]}"
            port = free_port()
            args = [*common, "--data-dir", str(tmp_path / name), "--grpc-port", str(port)]
            cluster.servers.append(_spawn(tmp_path, name, "server", port, args, env))
        for server in cluster.servers:
            _wait_healthy(server)
        for i in range(edges):
            name = f"edge-{'abcdefgh'[i]}"
            port = free_port()
            target = f"127.0.0.1:{cluster.servers[i % servers].port}"
            args = [*common, "--http-port", str(port), "--grpc-target", target]
            cluster.edges.append(_spawn(tmp_path, name, "edge", port, args, env))
        for edge in cluster.edges:
            _wait_healthy(edge)
        for i in range(workers):
            name = f"worker-{'abcdefgh'[i]}"
            args = [*common, "--data-dir", str(tmp_path / name), "--name", name, "--device", "cpu"]
            cluster.workers.append(_spawn(tmp_path, name, "worker", 0, args, env))
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.stop()
