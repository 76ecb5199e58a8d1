"""Server configuration: one frozen dataclass, validated when built, and the one function that
turns it into gRPC channel arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunegate.server.blobs import BlobSettings
from tunegate.server.routing import RoutingConfig
from tunegate.server.webhooks import WebhookSettings

__all__ = ["ServerConfig", "grpc_server_options"]

_MiB = 1024 * 1024

# gRPC's default receive limit, kept explicit: files are streamed, so no request may need more.
RECEIVE_LIMIT_BYTES = 4 * _MiB
# A 10,000-file list (OpenAI's maximum page) can exceed 4 MiB; responses may be larger.
SEND_LIMIT_BYTES = 64 * _MiB


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the gRPC server needs to start.

    `port=0` binds a free port (read it back from `GatewayServer.port`). `database_url=None`
    means SQLite at `<data_dir>/tunegate.db`; `postgresql+asyncpg://…` URLs are accepted too.
    Blobs live under `<data_dir>/blobs` (temporary writes in `<data_dir>/tmp`).
    `routing` holds the providers, virtual keys and allowed custom hosts (`tunegate.server.routing`).
    `reconcile_grace_seconds`: the job reconciler leaves a create intent younger than this
    alone at start-up (its request may still be in flight).
    `default_provider`: the provider a job create uses when it names none (None: a 400
    `missing_provider`); `local` — the on-machine trainer — by default.
    `webhooks`: the allow-list of webhook target hosts and the delivery retries
    (`tunegate.server.webhooks.WebhookSettings`).
    `blobs`: where blob bytes live (`tunegate.server.blobs.BlobSettings`; local disk by default).
    `local_concurrency`: how many local training workers run at once (state lives under
    `<data_dir>/local`); `local_train_threads`: CPU threads per worker (None: torch's default).
    `auth_mode`: `open` (no gateway key needed) or `keys` (every call needs one; see
    `tunegate.server.auth`). `master_key_file`: the master key sealing secrets at rest (when
    `TUNEGATE_MASTER_KEY` is unset; default `<data_dir>/master.key`). `key_refresh_seconds`: how
    often other replicas' virtual-key changes are picked up.
    `watch_poll_seconds`: how often a job watch (`WatchFineTuningJob`) looks for news.
    `monitor_*`: the job monitor (`tunegate.server.jobs.JobMonitor`): on or off, the fastest and
    slowest polling interval per job, a claim's lease, and how often due jobs are claimed.
    Raises `ValueError` on an invalid value.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051
    database_url: str | None = None
    max_file_bytes: int = 512 * _MiB
    max_part_bytes: int = 64 * _MiB
    max_upload_bytes: int = 8 * 1024**3
    grace_seconds: float = 5.0
    max_concurrent_rpcs: int = 1000
    # How often expired files and uploads are swept (seconds).
    sweep_interval_seconds: float = 300.0
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    reconcile_grace_seconds: float = 30.0
    default_provider: str | None = "local"
    local_concurrency: int = 1
    local_train_threads: int | None = None
    auth_mode: str = "open"
    master_key_file: Path | None = None
    key_refresh_seconds: float = 5.0
    watch_poll_seconds: float = 2.0
    monitor_enabled: bool = True
    monitor_min_interval_seconds: float = 10.0
    monitor_max_interval_seconds: float = 300.0
    monitor_lease_seconds: float = 60.0
    monitor_tick_seconds: float = 1.0
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    blobs: BlobSettings = field(default_factory=BlobSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.database_url is not None and not self.database_url.startswith(
            ("sqlite://", "sqlite+pysqlite://", "sqlite+aiosqlite://", "postgresql+asyncpg://")
        ):
            raise ValueError("database_url must start with sqlite:// or postgresql+asyncpg://")
        for name in ("max_file_bytes", "max_part_bytes", "max_upload_bytes", "max_concurrent_rpcs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        if self.sweep_interval_seconds <= 0:
            raise ValueError("sweep_interval_seconds must be positive")
        if not isinstance(self.routing, RoutingConfig):
            raise ValueError("routing must be a RoutingConfig")
        if not isinstance(self.webhooks, WebhookSettings):
            raise ValueError("webhooks must be a WebhookSettings")
        if not isinstance(self.blobs, BlobSettings):
            raise ValueError("blobs must be a BlobSettings")
        if not self.reconcile_grace_seconds >= 0:
            raise ValueError("reconcile_grace_seconds must not be negative")
        if self.auth_mode not in ("open", "keys"):
            raise ValueError(f"auth mode must be 'open' or 'keys', got {self.auth_mode!r}")
        if self.key_refresh_seconds <= 0:
            raise ValueError("key_refresh_seconds must be positive")
        if not self.watch_poll_seconds > 0:
            raise ValueError("watch_poll_seconds must be positive")
        if self.local_concurrency < 1:
            raise ValueError("local_concurrency must be at least 1")
        if self.local_train_threads is not None and self.local_train_threads < 1:
            raise ValueError("local_train_threads must be at least 1")
        if self.default_provider is not None and self.default_provider not in self.routing.provider_names:
            known = ", ".join(sorted(self.routing.provider_names))
            raise ValueError(f"default_provider: unknown provider {self.default_provider!r} (known: {known})")

    @property
    def resolved_database_url(self) -> str:
        """The database URL in use: the configured one, or SQLite inside `data_dir`."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tunegate.db').resolve()}"


def grpc_server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """The channel arguments for `grpc.aio.server(options=...)`.

    Reuseport is off so that binding an occupied port fails instead of silently sharing it.
    Keepalive lets the edge ping every 30 s even while idle (server minimum 20 s).
    """
    del config  # nothing in the config changes these yet; kept as the single place to add them
    return [
        ("grpc.max_receive_message_length", RECEIVE_LIMIT_BYTES),
        ("grpc.max_send_message_length", SEND_LIMIT_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ]
