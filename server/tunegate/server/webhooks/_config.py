"""The `[webhooks]` settings: one frozen dataclass, validated when built."""

from __future__ import annotations

from dataclasses import dataclass

from tunegate.server.webhooks._hosts import parse_allowed

__all__ = ["WebhookSettings"]


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How webhook events are delivered.

    `allowed_hosts`: `host` or `host:port` entries (exact; a host without a port allows any
    port) an endpoint may name although they are loopback or private, and over plain http
    (env `TUNEGATE_ALLOWED_WEBHOOK_HOSTS="a,b:8443"`); empty by default.
    `max_attempts`: attempts before a delivery is marked failed. The wait before attempt n+1 is
    `backoff_seconds * 2**(n-1)` (at most `max_backoff_seconds`) with ±20 % jitter, or the
    endpoint's `Retry-After` when it sends one (capped the same way).
    `timeout_seconds`: per attempt (connect, send, answer); `poll_seconds`: how often pending
    deliveries enqueued by other servers are looked for; `concurrency`: attempts in flight.
    Raises `ValueError` on an invalid value.
    """

    allowed_hosts: tuple[str, ...] = ()
    max_attempts: int = 8
    backoff_seconds: float = 5.0
    max_backoff_seconds: float = 3600.0
    timeout_seconds: float = 15.0
    poll_seconds: float = 5.0
    concurrency: int = 8

    def __post_init__(self) -> None:
        hosts = tuple(self.allowed_hosts)
        for entry in hosts:
            parse_allowed(entry)
        object.__setattr__(self, "allowed_hosts", hosts)
        if self.max_attempts < 1:
            raise ValueError("webhooks.max_attempts must be at least 1")
        for name in ("backoff_seconds", "max_backoff_seconds", "timeout_seconds", "poll_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"webhooks.{name} must be positive")
        if self.concurrency < 1:
            raise ValueError("webhooks.concurrency must be at least 1")
