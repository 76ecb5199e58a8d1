"""Stream a generated file into GCS's resumable upload protocol and report MB/s and memory.

The GCS side is the protocol-checking fake (`tests/fakes/gcs.py`, which keeps only a CRC32C per
upload) in a child process; the token comes from a fake OAuth endpoint through `Tokens`, asked
before every request, so the run also shows how many token fetches one credential costs.

    .venv/bin/python bench/gcs_upload_bench.py --size-mb 256
    .venv/bin/python bench/gcs_upload_bench.py --convert /tmp/tunegate-bench/bedrock/chat_1024M_v1.jsonl

With `--convert FILE` the bytes uploaded are FILE (an OpenAI chat JSONL, e.g. the one
`bedrock_upload_bench.py` generates) read in 1 MiB chunks and converted on the way by the Vertex
converter (`aconvert_chunks`, supervised): the whole staging pipeline of a Vertex create.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunegate.server.providers.vertex._auth import Tokens, parse_service_account  # noqa: E402
from tunegate.server.providers.vertex._convert import aconvert_chunks  # noqa: E402
from tunegate.server.providers.vertex._gcs import MiB, UploadStats, upload_stream  # noqa: E402

from tests.fakes.google_oauth import FakeGoogleOAuth  # noqa: E402
from tests.server.providers.vertex.test_auth import key_file  # noqa: E402


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def generated(size: int, piece: int = 256 * 1024) -> AsyncIterator[bytes]:
    line = b'{"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}\n'
    block = (line * (piece // len(line) + 1))[:piece]
    sent = 0
    while sent < size:
        n = min(piece, size - sent)
        yield block[:n]
        sent += n


async def file_chunks(path: Path, piece: int = MiB) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, piece):
            yield chunk


async def run(size_mb: int, chunk_mb: int, convert: Path | None = None) -> dict[str, object]:
    child = subprocess.Popen(  # noqa: ASYNC220 -- started once, before any timing
        [sys.executable, "-m", "tests.fakes.gcs", "--bucket", "bench-bucket"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    oauth = FakeGoogleOAuth()
    try:
        assert child.stdout is not None
        url = json.loads(child.stdout.readline())["url"]
        await oauth.start()
        raw, public = key_file(oauth.url)
        info = parse_service_account(raw, token_uris={oauth.url})
        oauth.accounts[info.client_email] = public
        tokens = Tokens()
        await tokens.token(info)  # warm: the imports, the key, the first fetch
        before = vm_hwm_kib()
        stats = UploadStats()
        start = time.perf_counter()
        _, size = await upload_stream(
            bucket="bench-bucket",
            name="bench.jsonl",
            chunks=(
                aconvert_chunks(file_chunks(convert), "supervised")
                if convert is not None
                else generated(size_mb * MiB)
            ),
            token=lambda: tokens.token(info),
            endpoint=url,
            chunk_size=chunk_mb * MiB,
            stats=stats,
        )
        seconds = time.perf_counter() - start
        after = vm_hwm_kib()
    finally:
        await oauth.stop()
        child.terminate()
        child.wait()
    input_bytes = os.path.getsize(convert) if convert is not None else size_mb * MiB  # noqa: ASYNC240
    return {
        "input_bytes": input_bytes,
        "input_mb_per_s": round(input_bytes / 1e6 / seconds, 1),
        "size_mb": size_mb,
        "chunk_mb": chunk_mb,
        "bytes": size,
        "seconds": round(seconds, 2),
        "mb_per_s": round(size / MiB / seconds, 1),
        "chunks": stats.chunks,
        "peak_rss_growth_mb": round((after - before) / 1024, 1),
        "token_requests": oauth.requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--chunk-mb", type=int, default=8)
    parser.add_argument("--convert", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.size_mb, args.chunk_mb, args.convert))))


if __name__ == "__main__":
    main()
