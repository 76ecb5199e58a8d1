"""The gateway's gRPC server: wiring, lifecycle, and the `serve` entry point.

`GatewayServer.start` opens (and migrates) the database, prepares the blob store (sweeping
interrupted writes), builds the provider adapters (`ProviderSet`), the `Router` and the job
registry, builds the `grpc.aio` server with the error interceptor, registers the servicers plus
health and reflection, binds, and starts three background tasks: the periodic expiry sweep, the
job reconciler (at start-up, then at the same interval; see `tunegate.server.jobs`) and the
webhook sender (`tunegate.server.webhooks`). `stop` flips health to NOT_SERVING, stops accepting
calls, waits up to `grace` seconds for running ones, cancels background work, closes the
provider clients and the webhook sender's client, then closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # untyped in stubs
from grpc_reflection.v1alpha import reflection
from sqlalchemy.engine import make_url
from tunegate.server.auth import ApiKeys, Guard, StoredVirtualKeys, load_master_key
from tunegate.server.blobs import BlobStore, close_blob_store, open_blob_store
from tunegate.server.chat import ChatService
from tunegate.server.config import ServerConfig, grpc_server_options
from tunegate.server.files import Clock, FileService
from tunegate.server.inprocess import HandlerTable, InProcessChannel
from tunegate.server.interceptor import ErrorInterceptor
from tunegate.server.jobs import (
    AccountRouter,
    CreationSettings,
    JobMonitor,
    JobService,
    JobSettings,
    MonitorSettings,
    ProviderLookup,
)
from tunegate.server.models import ModelService
from tunegate.server.providers import (
    BedrockSettings,
    HttpSettings,
    LocalProvider,
    LocalSettings,
    ProviderSet,
    SchedulerSettings,
)
from tunegate.server.routing import BEDROCK, FIREWORKS, Router
from tunegate.server.servicers import (
    ApiKeysServicer,
    ChatCompletionsServicer,
    FilesServicer,
    FineTuningServicer,
    ModelsServicer,
    UploadsServicer,
    VirtualKeysServicer,
    WebhookEndpointsServicer,
)
from tunegate.server.store import Database
from tunegate.server.uploads import UploadService
from tunegate.server.webhooks import HostPolicy, WebhookSender, WebhookService
from tunegate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    fine_tuning_pb2,
    fine_tuning_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    uploads_pb2,
    uploads_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

__all__ = ["SERVICE_NAMES", "GatewayServer", "serve"]

logger = logging.getLogger("tunegate.server")

BOOTSTRAP_ADMIN_ENV = "TUNEGATE_BOOTSTRAP_ADMIN_KEY"
"""A `tgk_…` key registered as an admin key at start-up when unknown (the first admin)."""

SERVICE_NAMES = (
    files_pb2.DESCRIPTOR.services_by_name["Files"].full_name,
    uploads_pb2.DESCRIPTOR.services_by_name["Uploads"].full_name,
    fine_tuning_pb2.DESCRIPTOR.services_by_name["FineTuning"].full_name,
    chat_pb2.DESCRIPTOR.services_by_name["ChatCompletions"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["Models"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["ApiKeys"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["VirtualKeys"].full_name,
    webhooks_pb2.DESCRIPTOR.services_by_name["WebhookEndpoints"].full_name,
)
"""The full names of the tunegate services (`tunegate.v1.Files`, …)."""

_HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GatewayServer:
    """A running gateway server. Build it with `await GatewayServer.start(config)`."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        server: grpc.aio.Server,
        health: Any,  # grpc_health.v1.health.aio.HealthServicer
        database: Database,
        files: FileService,
        uploads: UploadService,
        jobs: JobService,
        chat: ChatService,
        webhooks: WebhookService,
        webhook_sender: WebhookSender,
        blobs: BlobStore,
        providers: ProviderLookup,
        owns_providers: bool,
        port: int,
        handlers: HandlerTable,
    ) -> None:
        self.config = config
        self.database = database
        self.files = files
        self.uploads = uploads
        self.jobs = jobs
        """The job registry (its `reconcile()` also runs in the background)."""
        self.chat = chat
        self.webhooks = webhooks
        self.webhook_sender = webhook_sender
        """Sends pending webhook deliveries in the background (started with the server)."""
        self.blobs = blobs
        self.providers = providers
        self._owns_providers = owns_providers
        self.port = port
        """The bound port (the real one when the config asked for port 0)."""
        self._server = server
        self._health = health
        self._handlers = handlers
        self._sweeper: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._key_refresher: asyncio.Task[None] | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self.monitor: JobMonitor | None = None
        """The job monitor, when `monitor_enabled`."""
        self._stopped = False

    @property
    def address(self) -> str:
        """`host:port` clients can dial."""
        return _address(self.config.host, self.port)

    def channel(self) -> InProcessChannel:
        """A channel to this server's servicers for callers in this process and on this event
        loop (the edge under `tunegate run`): no HTTP/2 and no socket, a gRPC call's semantics
        (see `InProcessChannel`)."""
        return InProcessChannel(self._handlers)

    @classmethod
    async def start(
        cls,
        config: ServerConfig,
        *,
        clock: Clock = time.time,
        providers: ProviderLookup | None = None,
        router: AccountRouter | None = None,
        job_settings: JobSettings | None = None,
    ) -> GatewayServer:
        """Open the stores and start serving on `config.host:config.port`.

        `clock` (Unix seconds) drives timestamps and expiry; tests inject one to move time.
        `providers` and `router` default to `ProviderSet.default()` (with each configured
        provider's `timeout_seconds` and `max_retries`, and the local trainer under
        `<data_dir>/local`) and `Router(config.routing)`; tests inject fakes (injected
        providers are not started or closed here). `job_settings` defaults to `JobSettings`
        with the config's reconcile grace, default provider and watch poll interval.
        Raises `RuntimeError` if the address cannot be bound."""
        config.data_dir.mkdir(parents=True, exist_ok=True)
        database = await Database.open(config.resolved_database_url)
        owns_providers = providers is None
        provider_set: ProviderLookup = (
            ProviderSet.default(
                _http_settings(config),
                local=_local_provider(config),
                bedrock=_bedrock_settings(config),
                fireworks_multipart_limit=_fireworks_multipart_limit(config),
            )
            if providers is None
            else providers
        )
        webhook_sender: WebhookSender | None = None
        blobs: BlobStore | None = None
        try:
            blobs = open_blob_store(config.blobs, config.data_dir)
            swept = await blobs.sweep()
            if swept:
                logger.info("removed %d interrupted blob writes", swept)
            local = _local_of(provider_set)
            if local is not None and local.unbound:
                # The local provider's state lives in the gateway's database and blob store, so
                # every replica on them serves every local job.
                local.bind(database.local, blobs)
            if owns_providers:
                assert isinstance(provider_set, ProviderSet)
                await provider_set.start()
            files = FileService(database.files, blobs, max_file_bytes=config.max_file_bytes, clock=clock)
            uploads = UploadService(
                database.uploads,
                files,
                blobs,
                max_part_bytes=config.max_part_bytes,
                max_upload_bytes=config.max_upload_bytes,
                clock=clock,
            )
            if job_settings is None:
                grace = config.reconcile_grace_seconds
                job_settings = JobSettings(
                    creation=CreationSettings(reconcile_grace=grace),
                    default_provider=config.default_provider,
                    watch_poll_seconds=config.watch_poll_seconds,
                )
            master = load_master_key(config.data_dir, config.master_key_file)
            database.webhooks.sealer = master  # webhook signing secrets are sealed at rest too
            api_keys = ApiKeys(database.auth, master, clock)
            bootstrap = os.environ.get(BOOTSTRAP_ADMIN_ENV, "").strip()
            if bootstrap and await api_keys.register(
                bootstrap, tenant="admin", name="bootstrap", role="admin"
            ):
                logger.info("registered the bootstrap admin key from %s", BOOTSTRAP_ADMIN_ENV)
            stored_keys = StoredVirtualKeys(database.auth, master, clock)
            await stored_keys.refresh()
            guard = Guard(api_keys, config.auth_mode)
            account_router = router if router is not None else Router(config.routing, stored=stored_keys)
            if isinstance(account_router, Router):
                stored_keys.router = account_router
            jobs = JobService(
                database,
                files,
                account_router,
                provider_set,
                settings=job_settings,
                clock=clock,
            )
            server = grpc.aio.server(
                interceptors=[ErrorInterceptor(guard)],
                options=grpc_server_options(config),
                maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            )
            chat = ChatService(local, jobs)
            models = ModelService(account_router, provider_set, local, jobs)
            policy = HostPolicy(config.webhooks.allowed_hosts)
            webhooks = WebhookService(database.webhooks, policy, clock=clock)
            webhook_sender = WebhookSender(database.webhooks, config.webhooks, policy=policy, clock=clock)
            health_servicer = health_aio.HealthServicer()
            handlers = HandlerTable(guard)
            services: tuple[tuple[Callable[[Any, Any], None], object], ...] = (
                (
                    files_pb2_grpc.add_FilesServicer_to_server,
                    FilesServicer(
                        files, after_store=jobs.schedule_file_copy, check_route=jobs.check_upload_route
                    ),
                ),
                (uploads_pb2_grpc.add_UploadsServicer_to_server, UploadsServicer(uploads)),
                (fine_tuning_pb2_grpc.add_FineTuningServicer_to_server, FineTuningServicer(jobs)),
                (
                    chat_pb2_grpc.add_ChatCompletionsServicer_to_server,
                    ChatCompletionsServicer(chat, account_router, provider_set),
                ),
                (models_pb2_grpc.add_ModelsServicer_to_server, ModelsServicer(models)),
                (admin_pb2_grpc.add_ApiKeysServicer_to_server, ApiKeysServicer(api_keys)),
                (admin_pb2_grpc.add_VirtualKeysServicer_to_server, VirtualKeysServicer(stored_keys)),
                (
                    webhooks_pb2_grpc.add_WebhookEndpointsServicer_to_server,
                    WebhookEndpointsServicer(webhooks),
                ),
                (health_pb2_grpc.add_HealthServicer_to_server, health_servicer),
            )
            for add_to, servicer in services:
                add_to(servicer, server)  # the network
                add_to(servicer, handlers)  # the in-process channel
            reflection.enable_server_reflection(
                (*SERVICE_NAMES, _HEALTH_NAME, reflection.SERVICE_NAME), server
            )
            port = server.add_insecure_port(_address(config.host, config.port))
            await server.start()
            for name in ("", *SERVICE_NAMES):
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        except BaseException:
            if webhook_sender is not None:
                await webhook_sender.aclose()
            if owns_providers:
                await _aclose(provider_set)
            if blobs is not None:
                await close_blob_store(blobs)
            await database.close()
            raise
        gateway = cls(
            config=config,
            server=server,
            health=health_servicer,
            database=database,
            files=files,
            uploads=uploads,
            jobs=jobs,
            chat=chat,
            webhooks=webhooks,
            webhook_sender=webhook_sender,
            blobs=blobs,
            providers=provider_set,
            owns_providers=owns_providers,
            port=port,
            handlers=handlers,
        )
        gateway._sweeper = asyncio.create_task(gateway._sweep_forever(), name="tunegate-expiry-sweep")
        gateway._reconciler = asyncio.create_task(
            gateway._reconcile_forever(), name="tunegate-job-reconciler"
        )
        if config.monitor_enabled:
            monitor = JobMonitor(
                jobs,
                database.polls,
                MonitorSettings(
                    tick=config.monitor_tick_seconds,
                    min_interval=config.monitor_min_interval_seconds,
                    max_interval=config.monitor_max_interval_seconds,
                    lease_seconds=config.monitor_lease_seconds,
                ),
                clock=clock,
            )
            gateway.monitor = monitor
            gateway._monitor_task = asyncio.create_task(monitor.run(), name="tunegate-job-monitor")
        gateway._key_refresher = asyncio.create_task(
            gateway._refresh_keys_forever(stored_keys), name="tunegate-virtual-key-refresh"
        )
        database.jobs.after_enqueue = webhook_sender.wake
        webhook_sender.start()
        return gateway

    async def _refresh_keys_forever(self, stored_keys: StoredVirtualKeys) -> None:
        # Other replicas' virtual-key changes (this process applies its own at once).
        while True:
            await asyncio.sleep(self.config.key_refresh_seconds)
            try:
                await stored_keys.refresh()
            except Exception:
                logger.exception("virtual key refresh failed")

    async def sweep(self) -> None:
        """Delete expired files and expire stale uploads now."""
        await self.files.sweep_expired()
        await self.uploads.sweep_expired()

    async def _sweep_forever(self) -> None:
        # Runs at start-up, then every `sweep_interval_seconds`. A failed sweep is logged and
        # retried next time; reads never depend on it (expiry is also applied at read time).
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("expiry sweep failed")
            await asyncio.sleep(self.config.sweep_interval_seconds)

    async def _reconcile_forever(self) -> None:
        # Start-up first: intents left by a crash are completed (found by tag) or given up on.
        # Then periodically, for intents that were too young at start-up. Failures are logged.
        while True:
            try:
                report = await self.jobs.reconcile()
                if report.completed or report.failed:
                    logger.info("job reconciler: %s", report)
            except Exception:
                logger.exception("job reconciliation failed")
            await asyncio.sleep(self.config.sweep_interval_seconds)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving: health NOT_SERVING, refuse new calls, wait up to `grace` seconds
        (default `config.grace_seconds`) for running ones, cancel the rest, close the stores.
        Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        for task in (self._sweeper, self._reconciler, self._key_refresher, self._monitor_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._server.stop(self.config.grace_seconds if grace is None else grace)
        await self.webhook_sender.aclose()
        await self.jobs.aclose()
        self.chat.close()
        if self._owns_providers:
            await _aclose(self.providers)
        await close_blob_store(self.blobs)
        await self.database.close()

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self._server.wait_for_termination()


def _local_provider(config: ServerConfig) -> LocalProvider:
    threads = config.local_train_threads
    env = {} if threads is None else {"OMP_NUM_THREADS": str(threads), "TUNEGATE_TRAIN_THREADS": str(threads)}
    scheduler = SchedulerSettings(concurrency=config.local_concurrency, env=env)
    return LocalProvider(LocalSettings(root=config.data_dir / "local", scheduler=scheduler))


def _bedrock_settings(config: ServerConfig) -> BedrockSettings:
    settings = config.routing.providers.get(BEDROCK)
    return BedrockSettings.from_options(settings.options if settings else {})


def _fireworks_multipart_limit(config: ServerConfig) -> int | None:
    settings = config.routing.providers.get(FIREWORKS)
    limit = settings.options.get("upload_multipart_limit_bytes") if settings else None
    return int(limit) if limit else None


def _local_of(providers: ProviderLookup) -> LocalProvider | None:
    try:
        provider = providers.get("local")
    except Exception:
        return None
    return provider if isinstance(provider, LocalProvider) else None


def _http_settings(config: ServerConfig) -> dict[str, HttpSettings]:
    """Each configured provider's timeout and retry bound, for its adapter's HTTP client."""
    return {
        name: HttpSettings(timeout_seconds=provider.timeout_seconds, max_retries=provider.max_retries)
        for name, provider in config.routing.providers.items()
    }


async def _aclose(providers: ProviderLookup) -> None:
    close = getattr(providers, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            logger.exception("closing the provider clients failed")


async def serve(config: ServerConfig) -> None:
    """Run the gateway until SIGTERM or SIGINT, then stop gracefully."""
    gateway = await GatewayServer.start(config)
    database = make_url(config.resolved_database_url).render_as_string(hide_password=True)
    logger.info("tunegate gRPC server listening on %s", gateway.address)
    logger.info("data directory %s, database %s", config.data_dir.resolve(), database)

    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def request_stop(signum: signal.Signals) -> None:
        logger.info("received %s, shutting down (grace %.1fs)", signum.name, config.grace_seconds)
        if not stopping:
            stopping.append(loop.create_task(gateway.stop()))

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, request_stop, signum)
    try:
        await gateway.wait_for_termination()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if stopping:
            await stopping[0]
        await gateway.stop()
        logger.info("tunegate gRPC server stopped")
