"""CPU per provider call of the gateway's HTTP client, against a loopback aiohttp server.

    .venv/bin/python bench/client_bench.py [--calls 2000] [--conc 1,16,64]

Rows: `HttpClient` (the adapters' client: httpx with the gateway's retry and error handling),
a bare `httpx.AsyncClient`, and a bare `aiohttp.ClientSession` as the reference for what an
HTTP/1.1 client on this event loop costs. The figure is the process's CPU (client and the
loopback server together, the server's share being the same in every row) divided by calls.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from aiohttp import web
from tunegate.server.providers._http import Endpoint, HttpClient

JOB = {"object": "fine_tuning.job", "id": "ftjob-1", "status": "running", "model": "gpt-4o-mini"}

Call = Callable[[], Awaitable[object]]


async def _cpu_per_call(call: Call, calls: int, conc: int) -> float:
    for _ in range(100):
        await call()

    async def worker() -> None:
        for _ in range(calls // conc):
            await call()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return (time.process_time() - started) / (calls // conc * conc) * 1e6


async def main(calls: int, concurrencies: list[int]) -> None:
    app = web.Application()

    async def job(_: web.Request) -> web.Response:
        return web.json_response(JOB)

    app.router.add_get("/v1/fine_tuning/jobs/ftjob-1", job)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/v1/fine_tuning/jobs/ftjob-1"
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", {"Authorization": "Bearer sk-bench"}, {})
    gateway = HttpClient("openai")
    plain = httpx.AsyncClient()
    session = aiohttp.ClientSession()

    async def via_gateway() -> object:
        return await gateway.request_json("GET", endpoint, "/fine_tuning/jobs/ftjob-1")

    async def via_httpx() -> object:
        return (await plain.get(url)).json()

    async def via_aiohttp() -> object:
        async with session.get(url) as response:
            return await response.json()

    print("| client | " + " | ".join(f"c={c} CPU µs/call" for c in concurrencies) + " |")
    print("|---|" + "---|" * len(concurrencies))
    for name, call in (
        ("HttpClient (httpx)", via_gateway),
        ("httpx.AsyncClient", via_httpx),
        ("aiohttp.ClientSession", via_aiohttp),
    ):
        cells = [f"{await _cpu_per_call(call, calls, c):.0f}" for c in concurrencies]
        print(f"| {name} | " + " | ".join(cells) + " |")
    await gateway.aclose()
    await plain.aclose()
    await session.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--conc", default="1,16,64")
    args = parser.parse_args()
    asyncio.run(main(args.calls, [int(c) for c in args.conc.split(",")]))
