"""Shared fixtures: a real gateway (gRPC server + REST edge) on 127.0.0.1:0.

The gateway runs on its own event loop in a background thread, so tests can drive it with the
official *synchronous* SDKs exactly as a user would. One gateway serves a whole session; tests
isolate themselves by credential: every test gets its own API key, hence its own owner scope.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc.aio
import pytest
from tunegate.edge import EdgeConfig, EdgeServer
from tunegate.server.app import GatewayServer
from tunegate.server.config import ServerConfig


@dataclass
class Gateway:
    """A running gateway: where to reach it and where its data lives."""

    base_url: str
    grpc_target: str
    data_dir: Path
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _stop: Any = field(repr=False)

    def stored_files(self) -> list[Path]:
        """Every file under the data directory that is not the metadata database."""
        return sorted(
            p for p in self.data_dir.rglob("*") if p.is_file() and not p.name.startswith("tunegate.db")
        )

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


def start_gateway(
    data_dir: Path, *, in_process: bool = False, providers: Any = None, **limits: Any
) -> Gateway:
    """Starts server + edge on free loopback ports in a background thread. With `in_process`
    the edge calls the servicers through the server's in-process channel (as `tunegate run`
    does); otherwise over a gRPC connection to the server's port (as `tunegate edge` does).
    `providers` replaces the provider set (`GatewayServer.start`'s `providers`)."""
    # The job monitor polls providers on its own: tests that count provider calls or move a
    # fake's jobs by hand would race it, so it runs only where a test asks for it.
    limits.setdefault("monitor_enabled", False)
    loop = asyncio.new_event_loop()
    ready: Future[tuple[GatewayServer, EdgeServer]] = Future()

    async def boot() -> None:
        try:
            server = await GatewayServer.start(
                ServerConfig(data_dir=data_dir, port=0, **limits), providers=providers
            )
            edge = await EdgeServer.start(
                EdgeConfig(
                    grpc_target=f"127.0.0.1:{server.port}",
                    port=0,
                    **{k: v for k, v in limits.items() if k in ("max_file_bytes", "max_part_bytes")},
                ),
                cast(grpc.aio.Channel, server.channel()) if in_process else None,
            )
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        ready.set_result((server, edge))

    def run() -> None:
        asyncio.set_event_loop(loop)
        booting = loop.create_task(boot())
        loop.run_forever()
        booting.result()
        loop.close()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    server, edge = ready.result(timeout=60)

    async def stop() -> None:
        await edge.stop()
        await server.stop(0)

    return Gateway(
        base_url=f"http://127.0.0.1:{edge.port}/v1",
        grpc_target=f"127.0.0.1:{server.port}",
        data_dir=data_dir,
        _loop=loop,
        _thread=thread,
        _stop=stop,
    )


@pytest.fixture(scope="session", params=["grpc", "in-process"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The shared gateway, once per way the edge can reach the server."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), in_process=request.param == "in-process")
    yield gw
    gw.close()


@pytest.fixture
def api_key() -> str:
    """A credential of this test's own: its owner scope is empty at the start of the test."""
    return "sk-test-" + secrets.token_hex(12)
