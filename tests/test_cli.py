"""The `tunegate` command: settings precedence, and `tunegate run` as a real process."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tunegate.server.blobs import BlobSettings
from tunegate.server.cli import _wait_for_signal, load_settings
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, VirtualKey


def args(**overrides: object) -> argparse.Namespace:
    base: dict[str, object] = {"config": None, "data_dir": None, "grpc_port": None, "http_port": None}
    base.update(overrides)
    return argparse.Namespace(**base)


def test_defaults() -> None:
    settings = load_settings(args(), env={})
    assert settings.server.port == 50051
    assert settings.edge.port == 8787
    assert settings.edge.grpc_target == "127.0.0.1:50051"
    assert settings.server.data_dir == Path("data")


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text(
        'data_dir = "/from/file"\n[server]\nport = 1111\nmax_file_bytes = 1048576\n[edge]\nport = 2222\n'
    )
    env = {
        "TUNEGATE_CONFIG": str(config),
        "TUNEGATE_GRPC_PORT": "3333",
        "TUNEGATE_DATA_DIR": str(tmp_path / "env"),
    }
    settings = load_settings(args(http_port=4444), env=env)
    assert settings.server.port == 3333
    assert settings.edge.port == 4444
    assert settings.server.data_dir == tmp_path / "env"
    assert settings.edge.grpc_target == "127.0.0.1:3333"
    assert settings.server.max_file_bytes == settings.edge.max_file_bytes == 1048576


def test_auth_section_and_env(tmp_path: Path) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text('[auth]\nmode = "keys"\nmaster_key_file = "/etc/tg/master.key"\n')
    settings = load_settings(args(), env={"TUNEGATE_CONFIG": str(config)})
    assert settings.server.auth_mode == "keys"
    assert settings.server.master_key_file == Path("/etc/tg/master.key")
    opened = load_settings(args(), env={"TUNEGATE_CONFIG": str(config), "TUNEGATE_AUTH": "open"})
    assert opened.server.auth_mode == "open"
    config.write_text('[auth]\nmode = "everyone"\n')
    with pytest.raises(SystemExit, match="auth mode"):
        load_settings(args(), env={"TUNEGATE_CONFIG": str(config)})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key"),
        ("[nope]\n", "unknown top-level"),
        ("[server]\nport = -5\n", "port"),
    ],
)
def test_bad_config_stops_with_a_message(tmp_path: Path, document: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(document)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(args(config=str(config)), env={})
    assert message in str(exit_info.value)


ROUTING_TOML = """
[server]
reconcile_grace_seconds = 5

[routing]
allowed_custom_hosts = ["proxy.internal:8443", "mirror.example.com"]

[providers.azure-openai]
base_url = "http://127.0.0.1:9000/{resource_name}/openai"

[providers.openai]
timeout_seconds = 5

[providers.fireworks-ai]
base_url = "https://api.fireworks.ai"
max_retries = 0

[virtual_keys.team-azure]
provider = "azure"
api_key_env = "TEAM_AZURE_KEY"
resource_name = "team-eastus"
api_version = "2024-10-21"

[virtual_keys.trainer]
provider = "local"
"""


def test_routing_sections(tmp_path: Path) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text(ROUTING_TOML)
    settings = load_settings(args(config=str(config)), env={"TEAM_AZURE_KEY": "secret"})
    routing = settings.server.routing
    assert settings.server.reconcile_grace_seconds == 5
    assert routing.allowed_custom_hosts == ("proxy.internal:8443", "mirror.example.com")
    assert routing.providers["azure-openai"] == ProviderSettings(
        base_url="http://127.0.0.1:9000/{resource_name}/openai", api_version="v1"
    )
    assert routing.providers["openai"] == ProviderSettings(
        base_url="https://api.openai.com/v1", timeout_seconds=5
    )
    assert routing.providers["fireworks-ai"].max_retries == 0
    assert routing.virtual_keys["team-azure"] == VirtualKey(
        name="team-azure",
        provider="azure-openai",
        api_key_env="TEAM_AZURE_KEY",
        options={"resource_name": "team-eastus", "api_version": "2024-10-21"},
    )
    assert routing.virtual_keys["trainer"].api_key_env is None
    assert "secret" not in repr(settings)


def test_routing_defaults_and_env_override(tmp_path: Path) -> None:
    settings = load_settings(args(), env={})
    assert settings.server.routing.allowed_custom_hosts == ()
    assert settings.server.routing.virtual_keys == {}
    assert dict(settings.server.routing.providers) == dict(DEFAULT_PROVIDERS)
    assert settings.server.reconcile_grace_seconds == 30.0
    config = tmp_path / "tunegate.toml"
    config.write_text(ROUTING_TOML)
    env = {"TUNEGATE_CONFIG": str(config), "TUNEGATE_ALLOWED_CUSTOM_HOSTS": " a.internal , b.internal:8080,"}
    settings = load_settings(args(), env=env)
    assert settings.server.routing.allowed_custom_hosts == ("a.internal", "b.internal:8080")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[routing]\nallowed_hosts = []\n", "unknown key(s) in [routing]: allowed_hosts"),
        ('[routing]\nallowed_custom_hosts = "a.example"\n', "list of strings"),
        ('[routing]\nallowed_custom_hosts = ["*.example.com"]\n', "allowed_custom_hosts"),
        ("[routing]\nvirtual_keys = {}\n", "unknown key"),
        ('[providers.openai]\nbase_url = "ftp://x"\n', "[providers.openai]"),
        ('[providers.openai]\nbaseurl = "https://x"\n', "unknown key(s) in [providers.openai]"),
        ("[providers.together-ai]\ntimeout_seconds = 5\n", "base_url"),
        ('[virtual_keys.k]\napi_key_env = "K"\n', "needs provider"),
        ('[virtual_keys.k]\nprovider = "openai"\n', "api_key_env is required"),
        ('[virtual_keys.k]\nprovider = "openai"\napi_key_env = "K"\napi_key = "sk"\n', "unknown option"),
        ('[virtual_keys.k]\nprovider = "together-ai"\napi_key_env = "K"\n', "unknown provider"),
        ("[server]\nrouting = {}\n", "unknown key(s) in [server]: routing"),
        ("[server]\nreconcile_grace_seconds = -1\n", "reconcile_grace_seconds"),
    ],
)
def test_bad_routing_config_stops_with_a_message(tmp_path: Path, document: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(document)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(args(config=str(config)), env={})
    assert message in str(exit_info.value)


def test_webhooks_section_and_env_override(tmp_path: Path) -> None:
    defaults = load_settings(args(), env={}).server.webhooks
    assert defaults.allowed_hosts == () and defaults.max_attempts == 8
    config = tmp_path / "tunegate.toml"
    config.write_text('[webhooks]\nallowed_hosts = ["hooks.internal:8080"]\nmax_attempts = 3\n')
    settings = load_settings(args(config=str(config)), env={}).server.webhooks
    assert (settings.allowed_hosts, settings.max_attempts) == (("hooks.internal:8080",), 3)
    env = {"TUNEGATE_ALLOWED_WEBHOOK_HOSTS": " 127.0.0.1 , b.internal:8443,"}
    settings = load_settings(args(config=str(config)), env=env).server.webhooks
    assert (settings.allowed_hosts, settings.max_attempts) == (("127.0.0.1", "b.internal:8443"), 3)


@pytest.mark.parametrize(
    ("document", "env", "message"),
    [
        ('[webhooks]\nallowed_hosts = "a.example"\n', {}, "list of strings"),
        ('[webhooks]\nallowed_hosts = ["*.example.com"]\n', {}, "webhooks.allowed_hosts"),
        ("[webhooks]\nmax_attempts = 0\n", {}, "max_attempts"),
        ("[webhooks]\nretries = 3\n", {}, "unknown key(s) in [webhooks]: retries"),
        ("[server]\nwebhooks = {}\n", {}, "unknown key(s) in [server]: webhooks"),
        ("", {"TUNEGATE_ALLOWED_WEBHOOK_HOSTS": "http://x.example"}, "webhooks.allowed_hosts"),
    ],
)
def test_bad_webhooks_config_stops_with_a_message(
    tmp_path: Path, document: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(document)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(args(config=str(config)), env=env)
    assert message in str(exit_info.value)


def test_bad_env_custom_host_stops_with_a_message() -> None:
    with pytest.raises(SystemExit, match="allowed_custom_hosts"):
        load_settings(args(), env={"TUNEGATE_ALLOWED_CUSTOM_HOSTS": "http://x.example"})


def test_bad_env_port_stops_with_a_message() -> None:
    with pytest.raises(SystemExit, match="TUNEGATE_HTTP_PORT"):
        load_settings(args(), env={"TUNEGATE_HTTP_PORT": "eighty"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tunegate_run_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    tunegate = Path(sys.executable).parent / "tunegate"
    proc = subprocess.Popen(
        [
            str(tunegate),
            "run",
            "--data-dir",
            str(tmp_path / "d"),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        assert health.status_code == 200
        listing = httpx.get(f"http://127.0.0.1:{http_port}/v1/files")
        assert listing.json() == {
            "object": "list",
            "data": [],
            "first_id": "",
            "last_id": "",
            "has_more": False,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert (
        str(http_port) in output and str(tmp_path / "d") in output
    )  # logs say where it listens / data lives


async def test_serving_freezes_the_start_up_heap() -> None:
    # What start-up allocated is out of the collector's sight once the process serves.
    gc.unfreeze()
    waiting = asyncio.create_task(_wait_for_signal())
    await asyncio.sleep(0)
    try:
        assert gc.get_freeze_count() > 0
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler `_wait_for_signal` installed
        await asyncio.wait_for(waiting, 5)
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().remove_signal_handler(sig)
        gc.unfreeze()


def test_blobs_section_and_env_override(tmp_path: Path) -> None:
    assert load_settings(args(), env={}).server.blobs == BlobSettings()
    config = tmp_path / "tunegate.toml"
    config.write_text(
        '[blobs]\nurl = "s3://tg-blobs/prod/"\nendpoint_url = "http://127.0.0.1:9000"\n'
        'region = "eu-west-1"\npart_bytes = 16777216\n'
    )
    blobs = load_settings(args(config=str(config)), env={}).server.blobs
    assert (blobs.bucket, blobs.prefix, blobs.endpoint_url, blobs.region, blobs.part_bytes) == (
        "tg-blobs",
        "prod",
        "http://127.0.0.1:9000",
        "eu-west-1",
        16 * 1024 * 1024,
    )
    blobs = load_settings(args(config=str(config)), env={"TUNEGATE_BLOBS_URL": "s3://other"}).server.blobs
    assert (blobs.bucket, blobs.prefix, blobs.part_bytes) == ("other", "", 16 * 1024 * 1024)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('[blobs]\nurl = "https://tg-blobs/prod"\n', "s3://bucket/prefix"),
        ('[blobs]\nurl = "s3://Bad_Bucket/x"\n', "invalid bucket"),
        ('[blobs]\nurl = "s3://tg-blobs/a//b"\n', "invalid key prefix"),
        ('[blobs]\nurl = "s3://tg-blobs"\npart_bytes = 1048576\n', "at least 5242880"),
        ('[blobs]\nurl = "s3://tg-blobs"\nendpoint_url = "minio:9000"\n', "http(s) URL"),
        ('[blobs]\nbucket = "tg-blobs"\n', "unknown key(s) in [blobs]: bucket"),
        ('[blobs]\nurl = "s3://tg-blobs"\nmax_concurrency = 0\n', "max_concurrency"),
    ],
)
def test_bad_blobs_section_stops_with_a_message(tmp_path: Path, document: str, message: str) -> None:
    config = tmp_path / "tunegate.toml"
    config.write_text(document)
    with pytest.raises(SystemExit) as exit_info:
        load_settings(args(config=str(config)), env={})
    assert message in str(exit_info.value)


_ARENAS_PROBE = """
import ctypes, sys, threading
from tunegate.server.cli import limit_malloc_arenas

applied = limit_malloc_arenas()
start = threading.Barrier(8)

def churn():
    start.wait()
    for _ in range(2000):
        blocks = [bytearray(4096) for _ in range(16)]
        del blocks

threads = [threading.Thread(target=churn) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
path = sys.argv[1]
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
print(applied, open(path).read().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc arenas")
@pytest.mark.parametrize("env_value", [None, "3"])
def test_malloc_arenas_are_capped_unless_the_environment_says(tmp_path: Path, env_value: str | None) -> None:
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    if env_value is not None:
        env["MALLOC_ARENA_MAX"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS_PROBE, str(tmp_path / "malloc_info.xml")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    applied, arenas = out[0] == "True", int(out[1])
    assert applied is (env_value is None)
    assert 1 <= arenas <= (2 if env_value is None else int(env_value))
