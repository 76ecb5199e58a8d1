"""The `tunegate` command: `run` (server and edge together), `server`, `edge`, `worker` (takes
local training jobs from the PostgreSQL queue), and `keys` (gateway API keys and the master key,
run against the database).

Settings come from, strongest first: command-line flags, environment variables
(`TUNEGATE_DATA_DIR`, `TUNEGATE_HTTP_PORT`, `TUNEGATE_GRPC_PORT`, `TUNEGATE_CONFIG`,
`TUNEGATE_ALLOWED_CUSTOM_HOSTS`, `TUNEGATE_ALLOWED_WEBHOOK_HOSTS`, `TUNEGATE_BLOBS_URL`), a TOML
file (`--config`), then the built-in defaults. The TOML file holds everything else:

    data_dir = "/var/lib/tunegate"

    [server]                      # any ServerConfig field but `routing`
    host = "127.0.0.1"
    port = 50051
    database_url = "postgresql+asyncpg://tunegate@db/tunegate"
    max_file_bytes = 536870912
    reconcile_grace_seconds = 30

    [auth]
    mode = "keys"                 # or "open" (the default); env TUNEGATE_AUTH
    master_key_file = "/etc/tunegate/master.key"   # else TUNEGATE_MASTER_KEY, else <data_dir>/master.key

    [local]                       # the local provider (on-machine training)
    queue = "procrastinate"       # or "inprocess" (the default): jobs run inside the server that
                                  # took them; "procrastinate" queues them in the PostgreSQL of
                                  # database_url for `tunegate worker` processes

    [worker]                      # WorkerSettings: one `tunegate worker` (or run's embedded one)
    device = "cuda"               # or "cpu"; default: cuda when PyTorch sees a GPU
    memory_mb = 65536             # default: the machine's MemTotal
    concurrency = 1               # training jobs at once
    heartbeat_seconds = 10        # a worker silent for stalled_seconds is dead; its job is
    stalled_seconds = 30          # queued again and resumed from its newest checkpoint

    [edge]                        # any EdgeConfig field
    host = "127.0.0.1"
    port = 8787
    grpc_target = "127.0.0.1:50051"

    [routing]
    # host or host:port a caller's x-portkey-custom-host may name (exact match; a host without
    # a port allows any port). Empty by default. Env: TUNEGATE_ALLOWED_CUSTOM_HOSTS="a,b:8443".
    allowed_custom_hosts = ["llm-proxy.internal:8443"]

    [webhooks]                    # WebhookSettings
    # host or host:port a webhook endpoint may name although it is loopback/private, or http
    # (exact match). Empty by default. Env: TUNEGATE_ALLOWED_WEBHOOK_HOSTS="a,b:8443".
    allowed_hosts = ["hooks.internal:8080"]
    max_attempts = 8

    [blobs]                       # BlobSettings; without url, blobs stay under data_dir
    url = "s3://tunegate-blobs/prod"   # env TUNEGATE_BLOBS_URL; credentials: botocore's chain
    endpoint_url = "http://minio.internal:9000"   # an S3-compatible service (optional)
    region = "eu-west-1"
    part_bytes = 8388608          # multipart part size, at least 5 MiB

    [providers.openai]            # ProviderSettings; omitted keys keep the built-in default
    base_url = "https://api.openai.com/v1"
    timeout_seconds = 60
    max_retries = 2

    [providers.azure-openai]
    base_url = "https://{resource_name}.openai.azure.com/openai"
    api_version = "v1"            # or a dated version such as "2024-10-21"

    [virtual_keys.team-azure]     # x-portkey-virtual-key: team-azure
    provider = "azure-openai"
    api_key_env = "TEAM_AZURE_KEY"  # the *name* of the variable holding the secret
    resource_name = "team-eastus"   # any other key is a provider option
    api_version = "2024-10-21"
    # base_url = "https://…", region = "…" are optional
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import logging
import os
import signal
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import grpc.aio
from tunegate.edge import EdgeConfig, EdgeServer, install_redaction
from tunegate.server.app import GatewayServer
from tunegate.server.blobs import BlobSettings
from tunegate.server.config import ServerConfig
from tunegate.server.routing import DEFAULT_PROVIDERS, ProviderSettings, RoutingConfig, VirtualKey
from tunegate.server.webhooks import WebhookSettings
from tunegate.server.workers import WorkerSettings

__all__ = ["Settings", "load_settings", "main"]

_log = logging.getLogger("tunegate")

AUTH_ENV = "TUNEGATE_AUTH"
"""`open` or `keys`: beats `[auth] mode`."""

DEFAULT_DATA_DIR = Path("data")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Both halves of the gateway's configuration, resolved from flags, env and file."""

    server: ServerConfig
    edge: EdgeConfig
    worker: WorkerSettings = dataclasses.field(default_factory=WorkerSettings)


def _fields_of(
    cls: type[Any], table: Any, section: str, *, exclude: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SystemExit(f"config: [{section}] must be a table")
    known = {f.name for f in dataclasses.fields(cls) if f.init} - exclude
    unknown = sorted(set(table) - known)
    if unknown:
        raise SystemExit(f"config: unknown key(s) in [{section}]: {', '.join(unknown)}")
    return dict(table)


# Set from [providers] and [virtual_keys], not inside [routing].
_NOT_ROUTING = frozenset({"virtual_keys", "providers"})
_VIRTUAL_KEY_FIELDS = frozenset({"provider", "api_key_env", "base_url", "region"})


def _routing_config(document: Mapping[str, Any], env: Mapping[str, str]) -> RoutingConfig:
    """`[routing]`, `[providers.<name>]` and `[virtual_keys.<name>]` as a `RoutingConfig`."""
    routing_table = _fields_of(RoutingConfig, document.get("routing", {}), "routing", exclude=_NOT_ROUTING)
    hosts: Any = routing_table.get("allowed_custom_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts):
        raise SystemExit("config: [routing] allowed_custom_hosts must be a list of strings")
    from_env = env.get("TUNEGATE_ALLOWED_CUSTOM_HOSTS")
    if from_env:  # replaces the file's list, like every other environment setting
        hosts = [host.strip() for host in from_env.split(",") if host.strip()]

    providers_doc = document.get("providers", {})
    if not isinstance(providers_doc, dict):
        raise SystemExit("config: [providers] must hold [providers.<name>] tables")
    providers = dict(DEFAULT_PROVIDERS)
    for name, table in providers_doc.items():
        fields = _fields_of(ProviderSettings, table, f"providers.{name}")
        try:
            default = providers.get(name)
            providers[name] = (
                dataclasses.replace(default, **fields) if default else ProviderSettings(**fields)
            )
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"config: [providers.{name}]: {exc}") from None

    keys_doc = document.get("virtual_keys", {})
    if not isinstance(keys_doc, dict):
        raise SystemExit("config: [virtual_keys] must hold [virtual_keys.<name>] tables")
    virtual_keys: dict[str, VirtualKey] = {}
    for name, table in keys_doc.items():
        if not isinstance(table, dict):
            raise SystemExit(f"config: [virtual_keys.{name}] must be a table")
        fields = {key: value for key, value in table.items() if key in _VIRTUAL_KEY_FIELDS}
        options = {key: value for key, value in table.items() if key not in _VIRTUAL_KEY_FIELDS}
        if "provider" not in fields:
            raise SystemExit(f"config: [virtual_keys.{name}] needs provider")
        try:
            api_key_env = fields.pop("api_key_env", None)
            key = VirtualKey(name=name, api_key_env=api_key_env, options=options, **fields)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"config: [virtual_keys.{name}]: {exc}") from None
        if key.api_key_env is not None and not env.get(key.api_key_env):
            _log.warning("virtual key %r: environment variable %s is not set", name, key.api_key_env)
        virtual_keys[name] = key

    try:
        return RoutingConfig(
            allowed_custom_hosts=tuple(hosts), virtual_keys=virtual_keys, providers=providers
        )
    except ValueError as exc:
        raise SystemExit(f"config: {exc}") from None


def _webhook_settings(document: Mapping[str, Any], env: Mapping[str, str]) -> WebhookSettings:
    """`[webhooks]` as `WebhookSettings`; `TUNEGATE_ALLOWED_WEBHOOK_HOSTS` replaces its
    `allowed_hosts`."""
    table = _fields_of(WebhookSettings, document.get("webhooks", {}), "webhooks")
    hosts: Any = table.get("allowed_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts):
        raise SystemExit("config: [webhooks] allowed_hosts must be a list of strings")
    from_env = env.get("TUNEGATE_ALLOWED_WEBHOOK_HOSTS")
    if from_env:  # replaces the file's list, like every other environment setting
        hosts = [host.strip() for host in from_env.split(",") if host.strip()]
    table["allowed_hosts"] = tuple(hosts)
    try:
        return WebhookSettings(**table)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"config: [webhooks]: {exc}") from None


def _blob_settings(document: Mapping[str, Any], env: Mapping[str, str]) -> BlobSettings:
    """`[blobs]` as `BlobSettings`; `TUNEGATE_BLOBS_URL` replaces its `url`."""
    table = _fields_of(BlobSettings, document.get("blobs", {}), "blobs")
    from_env = env.get("TUNEGATE_BLOBS_URL")
    if from_env:
        table["url"] = from_env
    try:
        return BlobSettings(**table)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"config: [blobs]: {exc}") from None


_LOCAL_KEYS = frozenset({"queue"})
"""`[local] <key>` sets `ServerConfig.local_<key>`."""


def _worker_settings(document: Mapping[str, Any], args: argparse.Namespace) -> WorkerSettings:
    """`[worker]` as `WorkerSettings`, under the `tunegate worker` flags that override it."""
    table = _fields_of(WorkerSettings, document.get("worker", {}), "worker")
    for name in ("device", "memory_mb", "concurrency", "name"):
        value = getattr(args, f"worker_{name}", None)
        if value is not None:
            table[name] = value
    try:
        return WorkerSettings(**table)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"config: {exc}") from None


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def load_settings(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> Settings:
    """Resolves the settings for one command; invalid values stop the program with a message."""
    config_path = args.config or env.get("TUNEGATE_CONFIG")
    document: dict[str, Any] = {}
    if config_path:
        try:
            document = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"config: cannot read {config_path}: {exc}") from None
    sections = {
        "data_dir",
        "server",
        "edge",
        "routing",
        "providers",
        "virtual_keys",
        "auth",
        "webhooks",
        "blobs",
        "local",
        "worker",
    }
    unknown = sorted(set(document) - sections)
    if unknown:
        raise SystemExit(f"config: unknown top-level key(s): {', '.join(unknown)}")

    server_table = _fields_of(
        ServerConfig,
        document.get("server", {}),
        "server",
        exclude=frozenset({"routing", "webhooks", "blobs"}),
    )
    server_table["routing"] = _routing_config(document, env)
    auth_table = document.get("auth", {})
    if not isinstance(auth_table, dict) or set(auth_table) - {"mode", "master_key_file"}:
        raise SystemExit("config: [auth] takes mode and master_key_file")
    mode = env.get(AUTH_ENV) or auth_table.get("mode")
    if mode:
        server_table["auth_mode"] = mode
    if auth_table.get("master_key_file"):
        server_table["master_key_file"] = Path(auth_table["master_key_file"])
    server_table["webhooks"] = _webhook_settings(document, env)
    server_table["blobs"] = _blob_settings(document, env)
    local_table = document.get("local", {})
    if not isinstance(local_table, dict) or set(local_table) - _LOCAL_KEYS:
        raise SystemExit(f"config: [local] takes {', '.join(sorted(_LOCAL_KEYS))}")
    for key, value in local_table.items():
        server_table[f"local_{key}"] = value
    worker = _worker_settings(document, args)
    edge_table = _fields_of(EdgeConfig, document.get("edge", {}), "edge")

    data_dir = args.data_dir or env.get("TUNEGATE_DATA_DIR") or document.get("data_dir")
    server_table["data_dir"] = Path(data_dir) if data_dir else DEFAULT_DATA_DIR

    grpc_port = args.grpc_port if args.grpc_port is not None else _env_int(env, "TUNEGATE_GRPC_PORT")
    if grpc_port is not None:
        server_table["port"] = grpc_port
    http_port = args.http_port if args.http_port is not None else _env_int(env, "TUNEGATE_HTTP_PORT")
    if http_port is not None:
        edge_table["port"] = http_port
    if getattr(args, "grpc_target", None):
        edge_table["grpc_target"] = args.grpc_target
    # The edge enforces the same per-file limit as the server, so an over-limit upload is
    # refused (413) before its bytes cross the gRPC link.
    if "max_file_bytes" in server_table:
        edge_table.setdefault("max_file_bytes", server_table["max_file_bytes"])
    if "max_part_bytes" in server_table:
        edge_table.setdefault("max_part_bytes", server_table["max_part_bytes"])

    try:
        server_config = ServerConfig(**server_table)
        if "grpc_target" not in edge_table:
            host = server_config.host if server_config.host not in ("0.0.0.0", "::") else "127.0.0.1"
            edge_table["grpc_target"] = f"{host}:{server_config.port}"
        edge_config = EdgeConfig(**edge_table)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"config: {exc}") from None
    return Settings(server=server_config, edge=edge_config, worker=worker)


def _freeze_startup_heap() -> None:
    """Move what start-up allocated — modules, descriptors, the codec's per-type tables, route
    tables, all alive until exit — out of the cyclic collector's sight (`gc.freeze`), so its full
    collections scan only what requests allocate."""
    gc.collect()
    gc.freeze()


async def _wait_for_signal() -> None:
    _freeze_startup_heap()  # every mode calls this once it is serving
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _log.info("shutting down")


async def _run_server(settings: Settings) -> None:
    server = await GatewayServer.start(settings.server)
    try:
        await _wait_for_signal()
    finally:
        await server.stop()


async def _run_edge(settings: Settings) -> None:
    edge = await EdgeServer.start(settings.edge)
    try:
        await _wait_for_signal()
    finally:
        await edge.stop()


@contextlib.asynccontextmanager
async def _queue_worker(settings: Settings) -> AsyncIterator[Any]:
    """A started `QueueWorker` with its runner; on exit it hands its running jobs back (each
    checkpoints first) for another worker, and closes the runner."""
    from tunegate.server.workers import QueueWorker, new_worker_app, open_local_runner

    config = settings.server
    url = config.resolved_database_url
    app = new_worker_app(url, settings.worker)  # the runner queues validated jobs through it
    async with open_local_runner(config, app, worker=settings.worker.worker_name()) as runner:
        worker = QueueWorker(url, runner, settings.worker, app=app)
        await worker.start()
        try:
            yield worker
        finally:
            await worker.stop()


async def _wait_for_signal_or(worker: Any) -> None:
    """`_wait_for_signal`, or until `worker` (a `QueueWorker`, or None) fails, raising its error."""
    if worker is None:
        await _wait_for_signal()
        return
    signalled = asyncio.create_task(_wait_for_signal())
    failed = asyncio.create_task(worker.wait())
    done, _ = await asyncio.wait((signalled, failed), return_when=asyncio.FIRST_COMPLETED)
    for task in (signalled, failed):
        task.cancel()
    for task in done:
        task.result()  # a worker loop that died takes the process down with its error


async def _run_worker(settings: Settings) -> None:
    """`tunegate worker`: run local jobs from the queue until SIGTERM/SIGINT."""
    if settings.server.local_queue != "procrastinate":
        raise SystemExit(
            'tunegate worker: set [local] queue = "procrastinate" (with a PostgreSQL database_url)'
        )
    async with _queue_worker(settings) as worker:
        await _wait_for_signal_or(worker)


async def _run_both(settings: Settings) -> None:
    server = await GatewayServer.start(settings.server)
    edge_config = settings.edge
    if settings.server.port == 0:  # the edge follows the port the server actually bound
        edge_config = dataclasses.replace(edge_config, grpc_target=f"127.0.0.1:{server.port}")
    # The edge calls the servicers in-process (no loopback HTTP/2 hop); the gRPC port still
    # serves gRPC clients. The channel only has the methods the edge uses, hence the cast.
    channel = cast(grpc.aio.Channel, server.channel())
    try:
        edge = await EdgeServer.start(edge_config, channel)
    except BaseException:
        await server.stop()
        raise
    _log.info(
        "tunegate ready: REST http://%s:%d/v1  gRPC %s:%d  data %s",
        edge_config.host,
        edge.port,
        settings.server.host,
        server.port,
        settings.server.data_dir.resolve(),
    )
    try:
        # With the procrastinate queue, `run` is also one worker (an embedded `tunegate worker`).
        async with contextlib.AsyncExitStack() as embedded:
            worker = None
            if settings.server.local_queue == "procrastinate":
                worker = await embedded.enter_async_context(_queue_worker(settings))
            await _wait_for_signal_or(worker)
    finally:
        await edge.stop()  # stop taking HTTP requests first, then drain the gRPC server
        await server.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunegate", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "the gRPC server and the REST edge together"),
        ("server", "the gRPC server only"),
        ("edge", "the REST edge only, in front of a running server"),
        ("worker", "a training worker: takes local jobs from the PostgreSQL queue"),
    ):
        cmd = commands.add_parser(name, help=help_text)
        cmd.add_argument("--config", help="TOML config file (env TUNEGATE_CONFIG)")
        cmd.add_argument("--data-dir", help="where metadata and blobs live (env TUNEGATE_DATA_DIR)")
        cmd.add_argument("--grpc-port", type=int, help="gRPC port, default 50051 (env TUNEGATE_GRPC_PORT)")
        cmd.add_argument("--http-port", type=int, help="REST port, default 8787 (env TUNEGATE_HTTP_PORT)")
        cmd.add_argument("--log-level", default=os.environ.get("TUNEGATE_LOG_LEVEL", "INFO"))
        if name == "edge":
            cmd.add_argument("--grpc-target", help="host:port of the gRPC server")
        if name == "worker":
            cmd.add_argument(
                "--device", dest="worker_device", choices=("cpu", "cuda"), help="[worker] device"
            )
            cmd.add_argument("--memory-mb", dest="worker_memory_mb", type=int, help="[worker] memory_mb")
            cmd.add_argument(
                "--concurrency", dest="worker_concurrency", type=int, help="[worker] concurrency"
            )
            cmd.add_argument("--name", dest="worker_name", help="[worker] name (default host:pid)")
    document = commands.add_parser(
        "openapi", help="write the REST surface's OpenAPI document, generated from the contract"
    )
    document.add_argument("--proto", type=Path, required=True, help="the contract's .proto root (comments)")
    document.add_argument("--include", type=Path, action="append", default=[], help="an imported .proto root")
    document.add_argument("--out", type=Path, help="the file to write (default: standard output)")
    document.add_argument("--log-level", default=os.environ.get("TUNEGATE_LOG_LEVEL", "WARNING"))
    keys = commands.add_parser("keys", help="gateway API keys and the master key (runs against the database)")
    keys.add_argument("--config", help="TOML config file (env TUNEGATE_CONFIG)")
    keys.add_argument("--data-dir", help="where metadata and blobs live (env TUNEGATE_DATA_DIR)")
    keys.add_argument("--log-level", default=os.environ.get("TUNEGATE_LOG_LEVEL", "WARNING"))
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="issue a key; prints it alone on the last line")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="an admin key (manages keys)")
    create.add_argument("--expires-at", type=int, help="Unix seconds after which the key is refused")
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id")
    rotate = actions.add_parser("rotate-master", help="re-wrap every sealed secret under a new master key")
    rotate.add_argument("--new-key-file", required=True, type=Path, help="the new key (base64 of 32 bytes)")
    rotate.add_argument("--generate", action="store_true", help="write a fresh key to --new-key-file first")
    return parser


def _new_master(path: Path, *, generate: bool) -> Any:
    """The new master key of a rotation: read from `path`, written there first with `generate`."""
    from tunegate.server.auth import MasterKey, write_new_master_key

    try:
        return write_new_master_key(path) if generate else MasterKey.from_base64(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"tunegate keys rotate-master: {path}: {exc}") from None


async def _keys_command(args: argparse.Namespace, settings: Settings) -> None:
    from tunegate.server.auth import ApiKeys, MasterKey, load_master_key, rotate_master
    from tunegate.server.errors import TunegateError
    from tunegate.server.store import Database

    config = settings.server
    master = load_master_key(config.data_dir, config.master_key_file)
    database = await Database.open(config.resolved_database_url)
    try:
        api_keys = ApiKeys(database.auth, master)
        if args.action == "create":
            issued = await api_keys.create(
                tenant=args.tenant,
                name=args.name,
                role="admin" if args.admin else "tenant",
                expires_at=args.expires_at,
            )
            record = issued.record
            print(f"id {record.id}  tenant {record.tenant}  role {record.role}  (shown once, keep it secret)")
            print(issued.key)
        elif args.action == "list":
            for record in await api_keys.list(args.tenant):
                state = "revoked" if record.revoked_at else "live"
                print(f"{record.id}\t{record.tenant}\t{record.role}\t{record.name}\t{state}")
        elif args.action == "revoke":
            record = await api_keys.revoke(args.id)
            print(f"revoked {record.id} ({record.tenant}/{record.name})")
        else:
            path: Path = args.new_key_file
            new: MasterKey = args.new_master
            count = await rotate_master(database, master, new)
            default_file = config.data_dir / "master.key"
            if not os.environ.get("TUNEGATE_MASTER_KEY") and config.master_key_file is None:
                os.replace(path, default_file)
                print(f"re-wrapped {count} secrets; {default_file} now holds the new master key")
            else:
                print(
                    f"re-wrapped {count} secrets; point TUNEGATE_MASTER_KEY / master_key_file at {path} now"
                )
    except TunegateError as exc:
        raise SystemExit(f"tunegate keys: {exc.message}") from None
    finally:
        await database.close()


def _write_openapi(proto: Path, includes: Sequence[Path], out: Path | None) -> None:
    """`tunegate openapi`: the document `GET /openapi.json` serves, from the installed contract
    and the comments of the .proto files under `proto` (compiled with grpc_tools, a dev tool)."""
    from tunegate.edge import document_bytes, openapi_document, proto_comments

    document = document_bytes(openapi_document(comments=proto_comments(proto, includes)))
    if out is None:
        sys.stdout.buffer.write(document)
    else:
        out.write_bytes(document)


MALLOC_ARENAS = 2
"""glibc malloc arenas a gateway process uses unless `MALLOC_ARENA_MAX` is set."""
_M_ARENA_MAX = -8  # glibc's <malloc.h>


def limit_malloc_arenas(limit: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at `limit` (what `MALLOC_ARENA_MAX` sets), unless the
    environment already sets it; True if the cap was applied.

    By default glibc gives threads up to 8 arenas per core, and memory freed in an arena stays
    with it. gRPC's threads receive an upload's messages in their own arenas while the event
    loop frees them in another, so the first 1 GiB upload onto S3 left a server 70–110 MB
    larger; with two arenas it grows 36–55 MB (bench/RESULTS.md, "S3 blob store"). Called before
    any thread starts; does nothing off glibc."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, limit))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `tunegate` console script."""
    limit_malloc_arenas()
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_redaction()  # credentials never reach a log line, ours or a library's
    if args.command == "openapi":
        _write_openapi(args.proto, args.include, args.out)
        return
    if args.command == "keys":
        for name in ("grpc_port", "http_port"):
            setattr(args, name, None)
        if args.action == "rotate-master":
            args.new_master = _new_master(args.new_key_file, generate=args.generate)
        asyncio.run(_keys_command(args, load_settings(args)))
        return
    settings = load_settings(args)
    runner = {"run": _run_both, "server": _run_server, "edge": _run_edge, "worker": _run_worker}[args.command]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        asyncio.run(runner(settings))
    else:
        uvloop.run(runner(settings))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
