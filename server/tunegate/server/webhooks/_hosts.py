"""Which webhook URLs the gateway may call (sans-IO, pure): the SSRF rules.

An endpoint URL must be https, carry no credentials or fragment, and name a host that is
public: a literal IP address, or a name whose addresses are all public when it is resolved at
delivery time. Loopback, private, link-local, multicast, reserved and unspecified addresses are
refused. The operator's allow-list (`[webhooks] allowed_hosts`, `host` or `host:port` entries,
exact) lifts both rules for its hosts: an allow-listed host may be private and plain http.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tunegate.server.errors import InvalidArgument
from tunegate.server.routing import parse_allowed_host

__all__ = ["HostPolicy", "WebhookTarget", "is_public_address", "parse_allowed"]

MAX_URL_LENGTH = 2048


def is_public_address(address: str) -> bool:
    """Whether an IP address (text) is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A checked URL: its host (lower-case), effective port, and whether the host is
    allow-listed (then no address check applies)."""

    url: str
    host: str
    port: int
    allowed: bool


class HostPolicy:
    """The allow-list and the checks made at registration and before each delivery."""

    def __init__(self, allowed_hosts: Iterable[str] = ()) -> None:
        self._allowed = frozenset(parse_allowed(entry) for entry in allowed_hosts)

    def _is_allowed(self, host: str, port: int) -> bool:
        return (host, None) in self._allowed or (host, port) in self._allowed

    def check_url(self, url: str, *, param: str = "url") -> WebhookTarget:
        """The target of a URL a caller registers; `InvalidArgument` naming `param` when the URL
        is malformed, not https (unless allow-listed), or names a literal non-public address
        that is not allow-listed. A name's addresses are checked at delivery (`check_addresses`)."""
        if not url or len(url) > MAX_URL_LENGTH:
            raise InvalidArgument("url must be an https URL.", code="invalid_url", param=param)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise InvalidArgument(f"url has a bad port: {url!r}.", code="invalid_url", param=param) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument("url must be an https URL.", code="invalid_url", param=param)
        if parts.username is not None or parts.password is not None or parts.fragment:
            raise InvalidArgument(
                "url must not carry credentials or a fragment.", code="invalid_url", param=param
            )
        host = parts.hostname.lower()
        effective = port if port is not None else (443 if parts.scheme == "https" else 80)
        allowed = self._is_allowed(host, effective)
        if not allowed:
            if parts.scheme != "https":
                raise InvalidArgument(
                    "url must use https (plain http only for hosts the operator allow-lists).",
                    code="invalid_url",
                    param=param,
                )
            if _is_literal(host) and not is_public_address(host):
                raise InvalidArgument(
                    f"url names a loopback, private or reserved address ({host}); the operator "
                    "lists permitted internal hosts in [webhooks] allowed_hosts.",
                    code="webhook_host_not_allowed",
                    param=param,
                )
        return WebhookTarget(url=url, host=host, port=effective, allowed=allowed)

    def check_addresses(self, target: WebhookTarget, addresses: Iterable[str]) -> str | None:
        """Why a delivery to `target` resolved to `addresses` must not be sent (None: it may)."""
        if target.allowed:
            return None
        listed = list(addresses)
        if not listed:
            return f"{target.host} did not resolve"
        private = [address for address in listed if not is_public_address(address)]
        if private:
            return f"{target.host} resolves to a non-public address ({private[0]}) and is not allow-listed"
        return None


def parse_allowed(entry: str) -> tuple[str, int | None]:
    """An `allowed_hosts` entry as `(lower-cased host, port or None)` (the same rules as the
    routing's `allowed_custom_hosts`); `ValueError` for anything else."""
    try:
        return parse_allowed_host(entry)
    except ValueError as exc:
        raise ValueError(str(exc).replace("allowed_custom_hosts", "webhooks.allowed_hosts")) from None


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
