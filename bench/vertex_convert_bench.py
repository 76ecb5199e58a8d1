"""Converter throughput: OpenAI chat JSONL → Vertex AI Gemini supervised tuning data, one core.

    taskset -c 1 .venv/bin/python bench/vertex_convert_bench.py [SIZE] [--chunk BYTES]

SIZE like 256M (default 256M). Two inputs, generated in memory and fed to `Converter` in chunks
(default 1 MiB, as a streamed upload arrives); only the converter is timed, best of `--runs`:

- `short`: the Bedrock bench's lines (`bench/convert_bench.py` `generate`: system + user +
  assistant, ~190-240 bytes, ASCII);
- `mixed`: system + user + assistant (a quarter of them two user/assistant rounds) with texts of
  20 to 4000 characters, newlines, quotes and some non-ASCII (accents, CJK, emoji), deterministic.

Reports input MB/s (10^6 bytes) and the output size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tunegate.server.providers.vertex._convert import Converter

# The Bedrock bench's generator and size parser (bench/ is a folder of scripts, not a package).
_bedrock_bench = importlib.import_module("convert_bench")
generate = _bedrock_bench.generate
parse_size = _bedrock_bench.parse_size

_WORDS = [
    *[
        "the",
        "model",
        "answers",
        "each",
        "question",
        "briefly",
        "and",
        "exactly;",
        "données",
        "météo",
        "—",
        "日本語の文",
        "🎉",
    ],
    '"quoted"',
    "code:\nfor i in range(10):\n    print(i)\n",
    "tab\there",
    "café",
    "naïve",
]


def _text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        word = rng.choice(_WORDS)
        out.append(word)
        n += len(word) + 1
    return " ".join(out)


def generate_mixed(size: int) -> bytes:
    rng = random.Random(20)
    lines = []
    for _ in range(2048):
        messages = [{"role": "system", "content": _text(rng, rng.choice((40, 120, 400)))}]
        for _ in range(2 if rng.random() < 0.25 else 1):
            messages.append({"role": "user", "content": _text(rng, int(rng.lognormvariate(5, 1)) + 20)})
            messages.append(
                {"role": "assistant", "content": _text(rng, int(rng.lognormvariate(5.5, 1)) + 20)}
            )
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    block = "".join(lines).encode()
    return block * max(1, size // len(block))


def run(data: bytes, chunk: int) -> tuple[float, int]:
    conv = Converter("supervised")
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
    size = parse_size(args.size)
    for name, data in (("short", generate(size)), ("mixed", generate_mixed(size))):
        lines = data.count(b"\n")
        secs, out = min(run(data, args.chunk) for _ in range(args.runs))
        print(
            f"{name:6s} {len(data) / 1e6:7.1f} MB in, {lines} lines ({len(data) / lines:.0f} B/line), "
            f"chunk {args.chunk} B: {len(data) / 1e6 / secs:7.1f} MB/s, output {out / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
