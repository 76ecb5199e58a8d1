"""CPU per chat call in the provider layer: `OpenAIProvider.chat` (httpx) against a bare aiohttp
client doing the same POST, on the loopback fake OpenAI (run in a separate process, so only the
client's CPU is counted). Prints CPU microseconds per unary call (c=16 by default) and per streamed event.

    .venv/bin/python -m bench.chat_provider_cpu [--calls 2000] [--events 20000]
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


async def cpu(label: str, count: int, unit: str, work: Callable[[], Awaitable[None]]) -> None:
    await work()  # warm up (connections, imports)
    wall, start = time.perf_counter(), time.process_time()
    await work()
    used = time.process_time() - start
    print(
        f"{label:<34} {used / count * 1e6:8.1f} µs CPU per {unit}   ({time.perf_counter() - wall:.2f} s wall)"
    )


def main(calls: int, events: int, concurrency: int) -> None:
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        base = fake.stdout.readline().split()[-1]
        asyncio.run(unary_bench(base, calls, concurrency))
        asyncio.run(stream_bench(events))
    finally:
        fake.terminate()
        fake.wait()


async def unary_bench(base: str, calls: int, concurrency: int) -> None:
    """`calls` unary chats, `concurrency` at a time, against the fake in its own process."""
    account = Account(provider="openai", key="bench", base_url=base, credential="sk-bench")
    provider = OpenAIProvider()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100), headers={"Authorization": "Bearer sk-bench"}
    )
    headers = {"Content-Type": "application/json"}

    async def fan_out(one: Callable[[], Awaitable[None]]) -> None:
        async def worker(n: int) -> None:
            for _ in range(n):
                await one()

        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))

    async def httpx_unary() -> None:
        reply = await provider.chat(account, BODY, model="gpt-4o-mini", stream=False)
        async for _ in reply.chunks:
            pass

    async def aiohttp_unary() -> None:
        async with session.post(base + "/chat/completions", data=BODY, headers=headers) as response:
            await response.read()

    print(f"unary calls: {calls}, concurrency {concurrency}")
    await cpu("unary, OpenAIProvider (httpx)", calls, "call", lambda: fan_out(httpx_unary))
    await cpu("unary, bare aiohttp client", calls, "call", lambda: fan_out(aiohttp_unary))

    await session.close()
    await provider.aclose()


async def stream_bench(events: int) -> None:
    """One stream of `events` content events from an in-thread fake (whose CPU is counted too,
    the same for both clients: the difference is the client's)."""
    from tests.fakes import start_fake_openai_in_thread

    fake = start_fake_openai_in_thread()
    fake.chat.chunks, fake.chat.chunk_size = events, 16
    account = Account(provider="openai", key="bench", base_url=fake.base_url, credential="sk-bench")
    provider = OpenAIProvider()
    session = aiohttp.ClientSession(headers={"Authorization": "Bearer sk-bench"})
    headers = {"Content-Type": "application/json"}

    async def httpx_stream() -> None:
        reply = await provider.chat(account, STREAM, model="gpt-4o-mini", stream=True)
        async for _ in reply.chunks:
            pass

    async def aiohttp_stream() -> None:
        async with session.post(
            fake.base_url + "/chat/completions", data=STREAM, headers=headers
        ) as response:
            buffer = b""
            async for chunk in response.content.iter_any():
                data = buffer + chunk
                cut = data.rfind(b"\n\n") + 2
                buffer = data[cut:]

    await cpu("stream, OpenAIProvider (httpx)", events, "event (incl. fake)", httpx_stream)
    await cpu("stream, bare aiohttp client", events, "event (incl. fake)", aiohttp_stream)
    await session.close()
    await provider.aclose()
    fake.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    main(args.calls, args.events, args.concurrency)
