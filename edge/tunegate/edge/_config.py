"""Edge configuration: one frozen, validated dataclass, and the one place each part of it becomes
options — ``channel_options`` for the gRPC channel, ``server_options`` for aiohttp's server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EdgeConfig", "channel_options", "server_options"]

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
    keepalive_timeout: float = 75.0
    """Seconds an idle connection (no request under way) is kept open: after it is made, and after
    each answer."""
    head_timeout: float = 20.0
    """Seconds from the first byte of a request head to its end; a slower head gets a 408 and the
    connection closes. (Before the first byte, ``keepalive_timeout`` applies.)"""
    body_timeout: float = 60.0
    """Seconds a read of a request body may wait for the next bytes; a stalled body ends the
    request with a 408."""
    max_line_bytes: int = 8190
    """Longest request line (method, target, version)."""
    max_field_bytes: int = 8190
    """Longest header field (name and value)."""
    max_headers: int = 128
    """Most header fields in a request head; more is a 400."""
    max_json_bytes: int = _MIB
    """Largest JSON request body; more is a 413."""
    lingering_time: float = 10.0
    """Seconds spent reading (and dropping) the rest of a body the answer did not need — a 413's
    — before closing, so the client sees the answer rather than a reset."""

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
        timeouts = (
            self.unary_timeout,
            self.stream_timeout,
            self.keepalive_timeout,
            self.head_timeout,
            self.body_timeout,
        )
        if not all(timeout > 0 for timeout in timeouts):
            raise ValueError("timeouts must be positive")
        if self.lingering_time < 0:
            raise ValueError("lingering_time must not be negative")
        if not 256 <= self.max_line_bytes <= 64 * _KIB or not 256 <= self.max_field_bytes <= 64 * _KIB:
            raise ValueError("max_line_bytes and max_field_bytes must be 256 B–64 KiB")
        if not 8 <= self.max_headers <= 1024:
            raise ValueError(f"max_headers must be 8–1024, not {self.max_headers}")
        if self.max_json_bytes <= 0:
            raise ValueError("max_json_bytes must be positive")

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


def server_options(config: EdgeConfig) -> dict[str, Any]:
    """Keyword arguments for aiohttp's ``web.Server`` (passed on to each connection's
    ``RequestHandler``).

    A handler keeps running when its client goes away (``handler_cancellation=False``): a job
    being created is never abandoned half-way by a dropped socket. The head timeout is the
    edge's own (``_protocol.EdgeConnection``); aiohttp has none.
    """
    return {
        "handler_cancellation": False,
        "access_log": None,
        "keepalive_timeout": config.keepalive_timeout,
        "max_line_size": config.max_line_bytes,
        "max_field_size": config.max_field_bytes,
        "max_headers": config.max_headers,
        "lingering_time": config.lingering_time,
        "read_bufsize": 64 * _KIB,  # the body buffer's low water mark; reading pauses at twice it
    }
