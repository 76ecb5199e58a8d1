"""CPU per chat call in the provider layer, on the loopback fake OpenAI: `OpenAIProvider.chat`
(the aiohttp chat relay, `providers._chat`) against the same POST through the control plane's
httpx `HttpClient` and through a bare aiohttp client (the floor). Only the client's CPU is
counted for unary calls (the fake runs in its own process). Prints CPU microseconds per unary
call at each concurrency, and per streamed event.

    .venv/bin/python -m bench.chat_provider_cpu [--calls 2000] [--events 20000] [--concurrency 1,16]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
from tunegate.server.providers import Account, OpenAIProvider

BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}], "seed": 1}'
STREAM = BODY[:-1] + b', "stream": true}'
HEADERS = {"Content-Type": "application/json"}


async def cpu(label: str, count: int, unit: str, work: Callable[[], Awaitable[None]]) -> None:
    await work()  # warm up (connections, imports)
    wall, start = time.perf_counter(), time.process_time()
    await work()
    used = time.process_time() - start
    print(
        f"{label:<40} {used / count * 1e6:8.1f} µs CPU per {unit}   ({time.perf_counter() - wall:.2f} s wall)"
    )


def main(calls: int, events: int, concurrencies: list[int]) -> None:
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        base = fake.stdout.readline().split()[-1]
        for concurrency in concurrencies:
            asyncio.run(unary_bench(base, calls, concurrency))
        asyncio.run(stream_bench(events))
    finally:
        fake.terminate()
        fake.wait()


async def unary_bench(base: str, calls: int, concurrency: int) -> None:
    """`calls` unary chats, `concurrency` at a time, against the fake in its own process."""
    account = Account(provider="openai", key="bench", base_url=base, credential="sk-bench")
    provider = OpenAIProvider()
    endpoint = provider.endpoint(account)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100), headers={"Authorization": "Bearer sk-bench"}
    )

    async def fan_out(one: Callable[[], Awaitable[None]]) -> None:
        async def worker(n: int) -> None:
            for _ in range(n):
                await one()

        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))

    async def provider_unary() -> None:
        reply = await provider.chat(account, BODY, model="gpt-4o-mini", stream=False)
        async for _ in reply.chunks:
            pass

    async def httpx_unary() -> None:
        response = await provider.http.request(
            "POST",
            endpoint,
            "/chat/completions",
            content=BODY,
            headers=HEADERS,
            idempotent=False,
            retry_unsent=True,
            read_timeout=provider.http.settings.chat_timeout_seconds,
        )
        response.content  # noqa: B018 (read whole, as a unary chat is)

    async def aiohttp_unary() -> None:
        async with session.post(base + "/chat/completions", data=BODY, headers=HEADERS) as response:
            await response.read()

    print(f"unary calls: {calls}, concurrency {concurrency}")
    await cpu("unary, OpenAIProvider.chat (aiohttp)", calls, "call", lambda: fan_out(provider_unary))
    await cpu("unary, httpx HttpClient POST", calls, "call", lambda: fan_out(httpx_unary))
    await cpu("unary, bare aiohttp client", calls, "call", lambda: fan_out(aiohttp_unary))

    await session.close()
    await provider.aclose()


async def stream_bench(events: int) -> None:
    """One stream of `events` content events from an in-thread fake (whose CPU is counted too,
    the same for every client: the difference is the client's)."""
    from tests.fakes import start_fake_openai_in_thread

    fake = start_fake_openai_in_thread()
    fake.chat.chunks, fake.chat.chunk_size = events, 16
    account = Account(provider="openai", key="bench", base_url=fake.base_url, credential="sk-bench")
    provider = OpenAIProvider()
    endpoint = provider.endpoint(account)
    session = aiohttp.ClientSession(headers={"Authorization": "Bearer sk-bench"})
    items = 0

    async def provider_stream() -> None:
        nonlocal items
        reply = await provider.chat(account, STREAM, model="gpt-4o-mini", stream=True)
        async for _ in reply.chunks:
            items += 1

    async def httpx_stream() -> None:
        async with provider.http.stream(
            "POST", endpoint, "/chat/completions", content=STREAM, headers=HEADERS, idempotent=False
        ) as response:
            buffer = b""
            async for chunk in provider.http.body_chunks(response):
                data = buffer + chunk
                cut = data.rfind(b"\n\n") + 2
                buffer = data[cut:]

    async def aiohttp_stream() -> None:
        async with session.post(
            fake.base_url + "/chat/completions", data=STREAM, headers=HEADERS
        ) as response:
            buffer = b""
            async for chunk in response.content.iter_any():
                data = buffer + chunk
                cut = data.rfind(b"\n\n") + 2
                buffer = data[cut:]

    await cpu("stream, OpenAIProvider.chat (aiohttp)", events, "event (incl. fake)", provider_stream)
    print(f"  ({items / 2 / (events + 3):.2f} items relayed per event: bursts coalesce)")
    await cpu("stream, httpx HttpClient", events, "event (incl. fake)", httpx_stream)
    await cpu("stream, bare aiohttp client", events, "event (incl. fake)", aiohttp_stream)
    await session.close()
    await provider.aclose()
    fake.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated, e.g. 1,16")
    args = parser.parse_args()
    main(args.calls, args.events, [int(c) for c in args.concurrency.split(",")])
