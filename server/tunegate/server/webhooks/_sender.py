"""The webhook sender: a background task that POSTs pending deliveries, signed, with retries.

Theory of operation. A job's terminal transition enqueues one `pending` delivery per subscribed
endpoint (`tunegate.server.store._webhooks`), in the transaction that writes the status, and
wakes the sender. The sender takes due deliveries, claims each (a compare-and-set that moves
its due time past the attempt, so another server — or this one after a crash — tries it again
only once the claim runs out), and sends it:

    2xx                                → delivered
    network error, timeout, 408, 429, 5xx → pending again after a backoff (the endpoint's
                                         `Retry-After`, else exponential with jitter), or
                                         failed once `max_attempts` attempts were made
    any other answer, a deleted endpoint, a host that resolves to a non-public address and
    is not allow-listed                → failed (recorded in `last_error`)

A delivery is marked delivered only after a 2xx, so delivery is at least once; every attempt
sends the same body and `webhook-id`, with a fresh `webhook-timestamp` and signature. Redirects
are not followed (the target was checked, its redirect would not be). Besides being woken,
the sender looks for due deliveries every `poll_seconds` (those enqueued by other servers, and
retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable

import httpx
from tunegate.server.errors import InvalidArgument
from tunegate.server.files import Clock
from tunegate.server.providers import retry_after_seconds
from tunegate.server.store import DueDelivery, WebhookRepository
from tunegate.server.webhooks._config import WebhookSettings
from tunegate.server.webhooks._hosts import HostPolicy
from tunegate.server.webhooks._signing import signature_headers

__all__ = ["Resolver", "WebhookSender"]

logger = logging.getLogger("tunegate.server.webhooks")

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves a host name to its IP addresses (text)."""

_USER_AGENT = "tunegate-webhooks/1"
_BATCH = 64


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class WebhookSender:
    """Sends pending deliveries (see the module docstring). `start()` runs it in the
    background; `run_once()` sends what is due now (tests drive it directly)."""

    def __init__(
        self,
        repo: WebhookRepository,
        settings: WebhookSettings,
        *,
        policy: HostPolicy | None = None,
        clock: Clock = time.time,
        resolve: Resolver = _resolve,
        client: httpx.AsyncClient | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._repo = repo
        self.settings = settings
        self._policy = policy or HostPolicy(settings.allowed_hosts)
        self._clock = clock
        self._resolve = resolve
        self._jitter = jitter
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_seconds, connect=min(5.0, settings.timeout_seconds)),
            follow_redirects=False,
            trust_env=False,  # a proxy would make the address check meaningless
        )
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background until `aclose()`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="tunegate-webhook-sender")

    def wake(self) -> None:
        """Look for due deliveries now (called after a status write enqueued some)."""
        self._wake.set()

    async def aclose(self) -> None:
        """Stop the background task (an attempt in flight is abandoned: it is retried after its
        claim runs out) and close the HTTP client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_client:
            await self._client.aclose()

    async def run_once(self) -> int:
        """Attempt every delivery due now (up to one batch); returns how many were attempted."""
        now = self._clock()
        due = await self._repo.due(now, limit=_BATCH)
        claim_until = now + 2 * self.settings.timeout_seconds + 30
        claimed = [
            item
            for item in due
            if await self._repo.claim(item.delivery.id, seen=item.delivery.next_attempt_at, until=claim_until)
        ]
        await asyncio.gather(*(self._attempt(item) for item in claimed))
        return len(claimed)

    async def _run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                attempted = await self.run_once()
                if attempted >= _BATCH:
                    continue  # more may be due
                upcoming = await self._repo.next_due()
            except Exception:
                logger.exception("webhook delivery pass failed")
                upcoming = None
            wait = self.settings.poll_seconds
            if upcoming is not None:
                wait = min(wait, max(upcoming - self._clock(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _attempt(self, item: DueDelivery) -> None:
        async with self._slots:
            try:
                await self._send(item)
            except Exception:
                logger.exception("webhook delivery %s failed unexpectedly", item.delivery.id)

    async def _send(self, item: DueDelivery) -> None:
        delivery = item.delivery
        attempts = delivery.attempts + 1
        if item.endpoint_deleted:
            await self._repo.mark_failed(delivery.id, attempts=delivery.attempts, error="endpoint deleted")
            return
        try:
            target = self._policy.check_url(item.url)
        except InvalidArgument as exc:  # the allow-list changed since the endpoint was registered
            await self._repo.mark_failed(delivery.id, attempts=delivery.attempts, error=exc.message)
            return
        if not target.allowed:
            try:
                addresses = await self._resolve(target.host, target.port)
            except OSError as exc:
                await self._retry(delivery.id, attempts, f"cannot resolve {target.host}: {exc}", None)
                return
            refused = self._policy.check_addresses(target, addresses)
            if refused is not None:
                await self._repo.mark_failed(delivery.id, attempts=delivery.attempts, error=refused)
                logger.warning("webhook %s to %s refused: %s", delivery.id, delivery.endpoint_id, refused)
                return
        body = delivery.payload.encode()
        headers = {
            **signature_headers(item.secret, delivery.id, int(self._clock()), body),
            "content-type": "application/json",
            "user-agent": _USER_AGENT,
        }
        try:
            response = await self._client.post(item.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            await self._retry(delivery.id, attempts, f"{type(exc).__name__}: {exc}", None)
            return
        status = response.status_code
        if 200 <= status < 300:
            await self._repo.mark_delivered(delivery.id, attempts=attempts, now=int(self._clock()))
            logger.info("webhook %s (%s) delivered to %s", delivery.id, delivery.type, delivery.endpoint_id)
        elif status in (408, 429) or status >= 500:
            hint = retry_after_seconds(response.headers, now=self._clock())
            await self._retry(delivery.id, attempts, f"HTTP {status}", hint)
        else:
            await self._repo.mark_failed(delivery.id, attempts=attempts, error=f"HTTP {status}")
            logger.warning("webhook %s to %s: HTTP %d, given up", delivery.id, delivery.endpoint_id, status)

    def backoff(self, attempts: int, hint: float | None) -> float:
        """Seconds to wait after `attempts` failed attempts: the endpoint's hint, else
        exponential from `backoff_seconds` with ±20 % jitter; at most `max_backoff_seconds`."""
        if hint is not None:
            return min(hint, self.settings.max_backoff_seconds)
        base: float = self.settings.backoff_seconds * 2 ** min(attempts - 1, 32)
        return min(base * (0.8 + 0.4 * self._jitter()), self.settings.max_backoff_seconds)

    async def _retry(self, delivery_id: str, attempts: int, error: str, hint: float | None) -> None:
        if attempts >= self.settings.max_attempts:
            await self._repo.mark_failed(
                delivery_id, attempts=attempts, error=f"{error} (gave up after {attempts} attempts)"
            )
            logger.warning("webhook %s failed after %d attempts: %s", delivery_id, attempts, error)
            return
        at = self._clock() + self.backoff(attempts, hint)
        await self._repo.retry_later(delivery_id, attempts=attempts, at=at, error=error)
