"""Edge configuration: one frozen, validated dataclass and its one translation to gRPC options."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EdgeConfig", "channel_options"]

_KIB = 1024
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """How the REST edge listens and reaches the gRPC server. Validated when built.

    Raises ValueError for an impossible value.
    """

    grpc_target: str = "127.0.0.1:50051"
    """gRPC server address (any grpc target string, e.g. ``host:port`` or ``unix:/path``)."""
    host: str = "127.0.0.1"
    """Interface the HTTP server binds."""
    port: int = 8787
    """HTTP port; 0 picks any free port (see ``EdgeServer.port``)."""
    max_file_bytes: int = 512 * _MIB
    """Largest multipart part named ``file`` (``POST /v1/files``); OpenAI's limit is 512 MB."""
    max_part_bytes: int = 64 * _MIB
    """Largest multipart part named ``data`` (``POST /v1/uploads/{id}/parts``)."""
    chunk_bytes: int = _MIB
    """Bytes read from the HTTP body per step (64 KiB–1 MiB; 256 KiB+ is the efficient range)."""
    unary_timeout: float = 30.0
    """Deadline, in seconds, of every unary call."""
    stream_timeout: float = 3600.0
    """Deadline, in seconds, of an upload or download stream."""

    def __post_init__(self) -> None:
        if not self.grpc_target.strip():
            raise ValueError("grpc_target must not be empty")
        if not self.host.strip():
            raise ValueError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0–65535, not {self.port}")
        if self.max_file_bytes <= 0 or self.max_part_bytes <= 0:
            raise ValueError("max_file_bytes and max_part_bytes must be positive")
        if not 64 * _KIB <= self.chunk_bytes <= _MIB:
            raise ValueError(f"chunk_bytes must be 64 KiB–1 MiB, not {self.chunk_bytes}")
        if not self.unary_timeout > 0 or not self.stream_timeout > 0:
            raise ValueError("timeouts must be positive")

    def part_limit(self, part: str) -> int:
        """The byte limit of a binary multipart part by name (``data`` → parts, else files)."""
        return self.max_part_bytes if part == "data" else self.max_file_bytes


def channel_options(config: EdgeConfig) -> list[tuple[str, int]]:
    """The gRPC channel options for the edge → server link.

    The receive limit is raised to 64 MiB because a unary list (up to 10,000 files) can exceed
    gRPC's 4 MiB default; file bytes never rely on it (they stream). Keepalive pings every 30 s,
    also between calls, so an idle link behind a NAT or LB is not silently dropped; the server
    must permit that (``min_ping_interval_without_data_ms`` ≤ 30 s, ``permit_without_calls``).
    """
    del config  # every option is a constant today; the signature is the one place to add them
    return [
        ("grpc.max_receive_message_length", 64 * _MIB),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
