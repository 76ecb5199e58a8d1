"""S3 streaming upload throughput and memory: `upload_stream` into moto's S3 server on loopback.

    .venv/bin/python bench/s3_upload_bench.py [--size 256M] [--part 8M] [--concurrency 3] [--chunk 1M]

Starts moto's server as a separate process on 127.0.0.1 (so its copy of the data is not counted),
streams SIZE bytes of generated JSONL (1 MiB chunks, as the converter yields them) through
`upload_stream`, checks the object's size with HeadObject, and prints MB/s (10^6 bytes / s) and
the peak RSS growth of this process during the upload (VmHWM after resetting it through
/proc/self/clear_refs, minus VmRSS before) together with the uploader's own `max_buffered`.
Each `--part`/`--concurrency` pair given (comma-separated) is one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator

from benchlib import MB, moto_server, parse_size, reset_peak, status_kib
from tunegate.server.providers.bedrock._s3 import AwsCredentials, UploadStats, s3_client, upload_stream


async def generated(size: int, chunk: int) -> AsyncIterator[bytes]:
    line = (
        b'{"schemaVersion":"bedrock-conversation-2024",'
        b'"messages":[{"role":"user","content":[{"text":"q"}]}]}\n'
    )
    block = line * (chunk // len(line) + 1)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        # A fresh object per chunk, as a converter's output would be.
        yield bytes(memoryview(block)[:n])
        sent += n


async def run(url: str, size: int, part: int, concurrency: int, chunk: int) -> dict[str, float]:
    creds = AwsCredentials("AKIDBENCH", "bench-secret")
    async with s3_client(creds, region="us-east-1", endpoint_url=url) as s3:
        bucket = f"bench-{os.urandom(3).hex()}"
        await s3.create_bucket(Bucket=bucket)
        stats = UploadStats()
        before = status_kib("VmRSS")
        reset_peak()
        start = time.perf_counter()
        _, written = await upload_stream(
            s3,
            bucket=bucket,
            key="bench.jsonl",
            chunks=generated(size, chunk),
            part_size=part,
            concurrency=concurrency,
            stats=stats,
        )
        elapsed = time.perf_counter() - start
        peak = status_kib("VmHWM")
        head = await s3.head_object(Bucket=bucket, Key="bench.jsonl")
        assert head["ContentLength"] == written == size
        await s3.delete_object(Bucket=bucket, Key="bench.jsonl")
    return {
        "mb_s": size / MB / elapsed,
        "seconds": elapsed,
        "rss_growth_mib": (peak - before) / 1024,
        "max_buffered_mib": stats.max_buffered / (1 << 20),
        "parts": stats.parts,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="256M")
    ap.add_argument("--part", default="8M", help="comma-separated part sizes")
    ap.add_argument("--concurrency", default="3", help="comma-separated, paired with --part")
    ap.add_argument("--chunk", default="1M")
    args = ap.parse_args()
    size, chunk = parse_size(args.size), parse_size(args.chunk)
    parts = [parse_size(p) for p in args.part.split(",")]
    concs = [int(c) for c in args.concurrency.split(",")]
    if len(concs) == 1:
        concs *= len(parts)
    if len(parts) == 1:
        parts *= len(concs)
    with moto_server() as url:
        for part, conc in zip(parts, concs, strict=True):
            r = asyncio.run(run(url, size, part, conc, chunk))
            print(
                f"size={size >> 20}MiB part={part >> 20}MiB concurrency={conc} parts={r['parts']:.0f}: "
                f"{r['mb_s']:.0f} MB/s ({r['seconds']:.1f}s), peak RSS growth {r['rss_growth_mib']:.0f} MiB, "
                f"max buffered {r['max_buffered_mib']:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
