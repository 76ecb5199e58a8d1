"""Converter throughput: OpenAI chat JSONL → each Bedrock family's format, on one core.

    taskset -c 1 .venv/bin/python bench/convert_bench.py [SIZE] [--chunk BYTES]

SIZE like 256M (default 256M). Generates the input in memory (the same shape as the shared
`gen_jsonl.py`: system + user + assistant lines, ~190 bytes each, deterministic), then feeds it
to `Converter` in chunks (default 1 MiB, as a streamed upload would arrive) and reports input
MB/s (10^6 bytes) per family, best of three runs. Only the converter is timed.
"""

from __future__ import annotations

import argparse
import json
import time

from benchlib import parse_size
from tunegate.server.providers.bedrock._convert import FAMILIES, Converter


def generate(size: int) -> bytes:
    lines = []
    for i in range(4096):
        rec = {
            "messages": [
                {"role": "system", "content": "You are a terse assistant that answers in one sentence."},
                {
                    "role": "user",
                    "content": f"Question {i}: what is {i} * {i % 97 + 3} plus {(i * 7919) % 1000}?",
                },
                {
                    "role": "assistant",
                    "content": f"It is {i * (i % 97 + 3) + (i * 7919) % 1000}; id={i:08x}.",
                },
            ]
        }
        lines.append(json.dumps(rec) + "\n")
    block = "".join(lines).encode()
    return block * max(1, size // len(block))


def run(data: bytes, chunk: int, family_index: int) -> tuple[float, int]:
    conv = Converter(FAMILIES[family_index])
    out = 0
    view = memoryview(data)
    start = time.perf_counter()
    for pos in range(0, len(data), chunk):
        out += len(conv.feed(bytes(view[pos : pos + chunk])))
    out += len(conv.finish())
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", nargs="?", default="256M")
    ap.add_argument("--chunk", type=int, default=1 << 20)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    data = generate(parse_size(args.size))
    lines = data.count(b"\n")
    print(f"input {len(data) / 1e6:.1f} MB, {lines} lines, chunk {args.chunk} B")
    for i, family in enumerate(FAMILIES):
        best = min(run(data, args.chunk, i) for _ in range(args.runs))
        secs, out = best
        print(
            f"{family.name:28s} {family.data_format:26s} {len(data) / 1e6 / secs:7.1f} MB/s in, "
            f"output {out / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
