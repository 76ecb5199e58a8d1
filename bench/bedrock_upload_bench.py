#!/usr/bin/env python3
"""Bedrock end to end: an OpenAI chat JSONL file converted and streamed into S3 (moto, loopback).

    .venv/bin/python bench/bedrock_upload_bench.py [--size-mb 1024] [--format nova|prompt]
        [--portkey] [--no-converter]

1. Generates (once; cached under $SCRATCH/bedrock, default /tmp/tunegate-bench/bedrock) a
   realistic chat fine-tuning file of SIZE MiB: every line system + user + assistant, lengths
   mixed (mostly short turns, some of a few KB), text with non-ASCII letters, CJK, emoji, quotes,
   backslashes and newlines, 70% written as raw UTF-8 and 30% with `\\u` escapes. The file lives
   in a `LocalBlobStore` root, so it is read the way the gateway reads a stored file.
2. Starts moto's S3 server in its own process (CPU 0), so its copy of the data is not counted.
3. The converter alone (child process on CPU 1): 1 MiB chunks of the file into `Converter.feed`,
   only `feed` timed; input MB/s (10^6 bytes).
4. End to end (child process on CPU 1): `LocalBlobStore.open_reader` (1 MiB chunks, a worker
   thread per read) → `aconvert_chunks` → `upload_stream` with the default part size and
   concurrency. Reports input MB/s over the wall time, the child's peak RSS growth (VmHWM, reset
   through /proc/self/clear_refs after the S3 client is made, minus VmRSS then), its CPU seconds,
   the parts, and the uploader's own `max_buffered`. Then checks the object: its size equals the
   bytes the converter produced, and ranged GETs of its head and tail equal the conversion of the
   file's first and last lines.
5. With `--portkey`: Portkey's gateway (`@portkey-ai/gateway`, installed by the shared harness's
   `gateways/portkey.sh` into $SCRATCH/portkey, pinned to CPU 1) gets the same file on
   `POST /v1/files` with Bedrock headers. Its S3 URLs are hard-coded to amazonaws.com, so a Node
   preload (`portkey_s3_redirect.mjs`) points them at the same moto server. Recorded: HTTP status
   and answer, MB/s, the node process's peak RSS growth and CPU seconds, the part sizes it sent.
   Run once against moto as it is (S3's 5 MiB minimum part size enforced) and once against a
   second moto with `S3_UPLOAD_PART_MIN_SIZE=1` (what it would do if S3 took its parts).

One JSON line per measurement goes to stdout after the human-readable line, and all of them to
`--out` when given. Only the processes started here are stopped, by PID; everything is loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from benchlib import MB, MiB, cpu_seconds, free_port, moto_server, pin, reset_peak, status_kib

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SHARED_BENCH = ROOT.parent / "shared" / "bench"
SCRATCH = Path(os.environ.get("SCRATCH", os.path.join(os.environ.get("TMPDIR", "/tmp"), "tunegate-bench")))
DATA_VERSION = "v1"
CHUNK = 1 << 20
MODELS = {"nova": "amazon.nova-micro-v1:0", "prompt": "amazon.titan-text-express-v1"}
BUCKET = "tunegate-bench"
CREDS = ("AKIDBEDROCKBENCH", "bench-secret")
REGION = "us-east-1"
CHECK_BYTES = 256 << 10

# --------------------------------------------------------------------------------------------
# Data

_WORD_TEXT = (
    "the of and to in is that for it as with was on be by at this from or an are not have "
    "model data training example answer question value result function table user's input "
    "output error request response file batch token layer weight gradient loss epoch rate "
    "stream chunk buffer memory server client network latency throughput queue cache index "
    "café naïve façade résumé Straße Grüße señor año jalapeño Ελλάδα λόγος привет мир данные "
    "東京 数据 模型 训练 こんにちは 日本語 한국어 مرحبا שלום नमस्ते ✓ → — … ½ € "
    "😀 🚀 👍🏽 🇯🇵"
)
_WORDS = _WORD_TEXT.split()
_PUNCT = (",", ".", "?", "!", ";", " —", ":")
_EXTRAS = ('"quoted"', "C:\\\\temp\\\\x", "a\\tb", "`code`", "<tag>", "{json: 1}", "50%", "#3")
_SYSTEMS = (
    "You are a helpful assistant.",
    "You are a terse assistant that answers in one sentence.",
    "You are a customer support agent for an online shop. Be polite, precise and brief; never "
    "invent order numbers; ask for the order id when it is missing.",
    "Tu es un assistant qui répond en français, avec des phrases courtes et précises.",
    "You translate technical English into plain language for non-experts. Keep code blocks "
    "unchanged, explain acronyms the first time they appear, and prefer short paragraphs.",
    "You are a senior engineer reviewing pull requests. Point out bugs first, then style. "
    "Quote the offending line, explain why it is wrong, and suggest the smallest fix. "
    "Do not rewrite code that is correct. Be specific about edge cases such as empty inputs, "
    "unicode, time zones and concurrency.",
)


def _text(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, k=n_words)
    out: list[str] = []
    for i, w in enumerate(words):
        out.append(w)
        r = rng.random()
        if r < 0.08:
            out.append(rng.choice(_PUNCT))
        elif r < 0.1:
            out.append(" " + rng.choice(_EXTRAS))
        elif r < 0.105 and i:
            out.append("\n\n")
            continue
        out.append(" ")
    return "".join(out).strip()


def _n_words(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.randint(5, 40)
    if r < 0.9:
        return rng.randint(40, 200)
    return rng.randint(200, 1000)


def _line(rng: random.Random) -> bytes:
    record = {
        "messages": [
            {"role": "system", "content": rng.choice(_SYSTEMS)},
            {"role": "user", "content": _text(rng, _n_words(rng))},
            {"role": "assistant", "content": _text(rng, _n_words(rng))},
        ]
    }
    return (json.dumps(record, ensure_ascii=rng.random() < 0.3) + "\n").encode()


def generate(path: Path, size: int) -> None:
    """Write about `size` bytes (whole lines, never more) of chat JSONL to `path`: a 16 MiB
    block of distinct generated lines, repeated (seeded, so every run writes the same file)."""
    rng = random.Random(19)
    lines: list[bytes] = []
    total = 0
    while total < min(size, 16 * MiB):
        line = _line(rng)
        lines.append(line)
        total += len(line)
    block = b"".join(lines)
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "wb") as f:
        while written + len(block) <= size:
            f.write(block)
            written += len(block)
        rest = block[: size - written]
        rest = rest[: rest.rfind(b"\n") + 1]
        f.write(rest)
    os.replace(tmp, path)


def dataset(size_mb: int) -> tuple[Path, Path, str]:
    """(the .jsonl file, the blob store root holding the same file, its blob key), generated on
    first use."""
    base = SCRATCH / "bedrock"
    name = f"chat_{size_mb}M_{DATA_VERSION}"
    path = base / f"{name}.jsonl"
    store_root = base / "store"
    blob = store_root / "blobs" / name
    if not path.exists():
        base.mkdir(parents=True, exist_ok=True)
        print(f"generating {path} ({size_mb} MiB) ...", flush=True)
        generate(path, size_mb * MiB)
    if not blob.exists():
        blob.parent.mkdir(parents=True, exist_ok=True)
        (store_root / "tmp").mkdir(exist_ok=True)
        os.link(path, blob)
    return path, store_root, name


# --------------------------------------------------------------------------------------------
# Children (run with --child; the parent pins them)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def child_convert(path: Path, fmt: str) -> dict[str, Any]:
    """The converter alone: only `feed`/`finish` are timed."""
    from tunegate.server.providers.bedrock._convert import Converter, family_for

    conv = Converter(family_for(MODELS[fmt]))
    wall = cpu = 0.0
    size = out = 0
    for chunk in _chunks(path):
        size += len(chunk)
        t0, c0 = time.perf_counter(), time.process_time()
        out += len(conv.feed(chunk))
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
    t0 = time.perf_counter()
    out += len(conv.finish())
    wall += time.perf_counter() - t0
    return {
        "what": "converter",
        "format": fmt,
        "family": conv.family.name,
        "input_bytes": size,
        "output_bytes": out,
        "lines": conv.lines_out,
        "seconds": wall,
        "cpu_seconds": cpu,
        "mb_s": size / MB / wall,
    }


def _convert_lines(data: bytes, fmt: str) -> bytes:
    from tunegate.server.providers.bedrock._convert import convert_chunks, family_for

    return b"".join(convert_chunks([data], family_for(MODELS[fmt])))


def _expected_head_tail(path: Path, fmt: str) -> tuple[bytes, bytes]:
    """The conversion of the file's first and last whole lines within CHECK_BYTES."""
    with open(path, "rb") as f:
        head = f.read(CHECK_BYTES)
        f.seek(max(0, path.stat().st_size - CHECK_BYTES))
        tail = f.read()
    head = head[: head.rfind(b"\n") + 1]
    tail = tail[tail.find(b"\n") + 1 :]
    return _convert_lines(head, fmt), _convert_lines(tail, fmt)


async def _e2e(url: str, store_root: Path, blob_key: str, path: Path, size: int, fmt: str) -> dict[str, Any]:
    from tunegate.server.blobs import LocalBlobStore
    from tunegate.server.providers.bedrock._convert import aconvert_chunks, family_for
    from tunegate.server.providers.bedrock._s3 import (
        DEFAULT_CONCURRENCY,
        DEFAULT_PART_SIZE,
        AwsCredentials,
        UploadStats,
        s3_client,
        upload_stream,
    )

    rss_start = status_kib("VmRSS")
    store = LocalBlobStore(store_root)
    family = family_for(MODELS[fmt])
    key = f"tunegate/{blob_key}.{family.name}.jsonl"
    stats = UploadStats()
    produced = 0
    largest_out = 0

    async def converted() -> AsyncIterator[bytes]:
        nonlocal produced, largest_out
        async for out in aconvert_chunks(store.open_reader(blob_key, CHUNK), family):
            produced += len(out)
            largest_out = max(largest_out, len(out))
            yield out

    async with s3_client(AwsCredentials(*CREDS), region=REGION, endpoint_url=url) as s3:
        await s3.head_bucket(Bucket=BUCKET)  # the client is made and has talked to S3 once
        rss_before = status_kib("VmRSS")
        reset_peak()
        c0, t0 = time.process_time(), time.perf_counter()
        _, written = await upload_stream(s3, bucket=BUCKET, key=key, chunks=converted(), stats=stats)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        peak = status_kib("VmHWM")

        head = await s3.head_object(Bucket=BUCKET, Key=key)
        object_size = head["ContentLength"]
        want_head, want_tail = _expected_head_tail(path, fmt)
        got = await s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes=0-{len(want_head) - 1}")
        got_head = await got["Body"].read()
        got = await s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes=-{len(want_tail)}")
        got_tail = await got["Body"].read()
        await s3.delete_object(Bucket=BUCKET, Key=key)
    checks = {
        "size_matches": object_size == written == produced,
        "head_matches": got_head == want_head,
        "tail_matches": got_tail == want_tail,
        "head_lines_checked": want_head.count(b"\n"),
        "tail_lines_checked": want_tail.count(b"\n"),
    }
    return {
        "what": "tunegate_e2e",
        "format": fmt,
        "family": family.name,
        "input_bytes": size,
        "output_bytes": produced,
        "object_bytes": object_size,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "mb_s": size / MB / seconds,
        "rss_start_mib": rss_start / 1024,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": peak / 1024,
        "rss_growth_mb": (peak - rss_before) * 1024 / MB,
        "parts": stats.parts,
        "part_size": DEFAULT_PART_SIZE,
        "concurrency": DEFAULT_CONCURRENCY,
        "max_buffered_mib": stats.max_buffered / MiB,
        "largest_converted_chunk_mib": largest_out / MiB,
        **checks,
    }


def run_child(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if args.child == "convert":
        result = child_convert(path, args.format)
    else:
        result = asyncio.run(
            _e2e(args.endpoint, Path(args.store), args.blob_key, path, path.stat().st_size, args.format)
        )
    print(json.dumps(result), flush=True)


def spawn_child(cpus: str | None, *extra: str) -> dict[str, Any]:
    cmd = [*pin(cpus), sys.executable, str(Path(__file__).resolve()), *extra]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------------------------
# Portkey


def ensure_portkey(directory: Path) -> None:
    if not (directory / "node_modules/@portkey-ai/gateway/build/start-server.js").exists():
        subprocess.run(
            ["bash", str(SHARED_BENCH / "gateways/portkey.sh"), "install", str(directory)], check=True
        )


def portkey_version(directory: Path) -> str:
    meta = json.loads((directory / "node_modules/@portkey-ai/gateway/package.json").read_text())
    return str(meta["version"])


def start_portkey(
    directory: Path, port: int, s3_url: str, log_dir: Path, cpus: str | None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "S3_REDIRECT_ENDPOINT": s3_url,
        "S3_REDIRECT_LOG": str(log_dir / "s3-requests.jsonl"),
    }
    with open(log_dir / "portkey.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *pin(cpus),
                "node",
                "--import",
                str(SHARED_BENCH / "gateways/bind_loopback.mjs"),
                "--import",
                str(HERE / "portkey_s3_redirect.mjs"),
                "node_modules/@portkey-ai/gateway/build/start-server.js",
                f"--port={port}",
                "--headless",
            ],
            cwd=directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"Portkey's gateway exited; see {log_dir / 'portkey.log'}") from None
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("Portkey's gateway did not start")


def _s3(url: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=CREDS[0],
        aws_secret_access_key=CREDS[1],
    )


def run_portkey(
    directory: Path, s3_url: str, path: Path, fmt: str, label: str, cpus: str | None
) -> dict[str, Any]:
    sys.path.insert(0, str(SHARED_BENCH))
    import upload as uploader  # type: ignore[import-not-found]

    log_dir = SCRATCH / "bedrock" / f"portkey-{label}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    port = free_port()
    proc = start_portkey(directory, port, s3_url, log_dir, cpus)
    key = f"portkey/{path.stem}.{fmt}.jsonl"
    headers = {
        "x-portkey-provider": "bedrock",
        "x-portkey-aws-access-key-id": CREDS[0],
        "x-portkey-aws-secret-access-key": CREDS[1],
        "x-portkey-aws-region": REGION,
        "x-portkey-aws-s3-bucket": BUCKET,
        "x-portkey-aws-s3-object-key": key,
        "x-portkey-provider-model": MODELS[fmt],
        "x-portkey-file-purpose": "fine-tune",
        "x-portkey-model-type": "chat" if fmt == "nova" else "text",
    }
    try:
        rss_before = status_kib("VmRSS", proc.pid)
        reset_peak(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        up = uploader.upload(f"http://127.0.0.1:{port}/v1", str(path), headers, purpose="fine-tune")
        cpu = cpu_seconds(proc.pid) - cpu0
        peak = status_kib("VmHWM", proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    requests = [json.loads(line) for line in (log_dir / "s3-requests.jsonl").read_text().splitlines()]
    parts = [r for r in requests if r["method"] == "PUT" and "partNumber=" in r["query"]]
    sizes = sorted(r["body_bytes"] for r in parts)
    s3 = _s3(s3_url)
    try:
        obj = s3.head_object(Bucket=BUCKET, Key=key)
        object_bytes: int | None = obj["ContentLength"]
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
        first = body.read(4096)
        first_line = first.split(b"\n", 1)[0][:300].decode(errors="replace")
        object_lines = first.count(b"\n")
        while piece := body.read(8 * MiB):
            object_lines += piece.count(b"\n")
        s3.delete_object(Bucket=BUCKET, Key=key)
    except s3.exceptions.ClientError:  # the object was never completed
        object_bytes, first_line, object_lines = None, None, None
    for upload in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    response = up["response"]
    return {
        "what": "portkey",
        "label": label,
        "format": fmt,
        "version": portkey_version(directory),
        "status": up["status"],
        "response": response if len(json.dumps(response)) < 2000 else str(response)[:2000],
        "input_bytes": up["file_bytes"],
        "seconds": up["seconds"],
        "mb_s": up["file_bytes"] / MB / up["seconds"],
        "cpu_seconds": cpu,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": peak / 1024,
        "rss_growth_mb": (peak - rss_before) * 1024 / MB,
        "s3_requests": len(requests),
        "parts": len(parts),
        "part_bytes_min": sizes[0] if sizes else None,
        "part_bytes_median": sizes[len(sizes) // 2] if sizes else None,
        "part_bytes_max": sizes[-1] if sizes else None,
        "object_bytes": object_bytes,
        "object_lines": object_lines,
        "first_line": first_line,
    }


# --------------------------------------------------------------------------------------------


def show(result: dict[str, Any], out: list[dict[str, Any]]) -> None:
    out.append(result)
    what = result["what"]
    if what == "converter":
        print(
            f"converter alone ({result['family']}, 1 core): {result['mb_s']:.1f} MB/s "
            f"({result['seconds']:.1f} s, {result['output_bytes'] / MB:.0f} MB out, {result['lines']} lines)"
        )
    elif what == "tunegate_e2e":
        ok = result["size_matches"] and result["head_matches"] and result["tail_matches"]
        print(
            f"tunegate end to end ({result['family']}): {result['mb_s']:.1f} MB/s "
            f"({result['seconds']:.1f} s, "
            f"CPU {result['cpu_seconds']:.1f} s), peak RSS growth {result['rss_growth_mb']:.1f} MB "
            f"({result['rss_before_mib']:.0f} -> {result['rss_peak_mib']:.0f} MiB), {result['parts']} parts, "
            f"max buffered {result['max_buffered_mib']:.0f} MiB, object {result['object_bytes']} B, "
            f"checks {'ok' if ok else 'FAILED'}"
        )
    else:
        print(
            f"Portkey {result['version']} ({result['label']}): HTTP {result['status']} after "
            f"{result['seconds']:.1f} s = {result['mb_s']:.1f} MB/s, CPU {result['cpu_seconds']:.1f} s, "
            f"peak RSS growth {result['rss_growth_mb']:.1f} MB, {result['parts']} parts "
            f"({result['part_bytes_min']}..{result['part_bytes_max']} B), object {result['object_bytes']} B "
            f"in {result['object_lines']} lines"
        )
        if result["first_line"]:
            print(f"  first line: {result['first_line'][:160]}")
        print(f"  answer: {json.dumps(result['response'])[:400]}")
    print(json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="input file size in MiB (default 1024)")
    ap.add_argument("--format", choices=sorted(MODELS), default="nova")
    ap.add_argument("--portkey", action="store_true", help="also run Portkey's gateway on the same file")
    ap.add_argument("--no-converter", action="store_true", help="skip the converter-alone run")
    ap.add_argument("--no-tunegate", action="store_true", help="skip tunegate's end-to-end run")
    ap.add_argument("--cpus", default="1", help="CPU list for the measured process ('' = no pinning)")
    ap.add_argument("--moto-cpus", default="0", help="CPU list for moto ('' = no pinning)")
    ap.add_argument("--portkey-dir", default=str(SCRATCH / "portkey"))
    ap.add_argument("--out", help="append the JSON results to this file")
    # internal: the measured child processes
    ap.add_argument("--child", choices=["convert", "e2e"], help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--blob-key", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args)
        return

    path, store_root, blob_key = dataset(args.size_mb)
    size = path.stat().st_size
    with open(path, "rb") as f:
        sample = f.read(16 * MiB)
    whole = sample[: sample.rfind(b"\n") + 1]
    mean_line = len(whole) / whole.count(b"\n")
    input_lines = sum(chunk.count(b"\n") for chunk in _chunks(path))
    print(
        f"input {path}: {size / MB:.1f} MB, {input_lines} lines, mean line {mean_line:.0f} B, "
        f"format {args.format} ({MODELS[args.format]})",
        flush=True,
    )
    results: list[dict[str, Any]] = [
        {"what": "input", "path": str(path), "bytes": size, "lines": input_lines, "mean_line": mean_line}
    ]
    cpus = args.cpus or None
    common = ["--file", str(path), "--format", args.format]
    if not args.no_converter:
        show(spawn_child(cpus, "--child", "convert", *common), results)
    with moto_server(cpus=args.moto_cpus or None) as url:
        _s3(url).create_bucket(Bucket=BUCKET)
        if not args.no_tunegate:
            extra = ["--store", str(store_root), "--blob-key", blob_key, "--endpoint", url]
            show(spawn_child(cpus, "--child", "e2e", *common, *extra), results)
        if args.portkey:
            directory = Path(args.portkey_dir)
            ensure_portkey(directory)
            show(run_portkey(directory, url, path, args.format, "moto, 5 MiB minimum part", cpus), results)
    if args.portkey:
        lenient = {"S3_UPLOAD_PART_MIN_SIZE": "1"}
        with moto_server(cpus=args.moto_cpus or None, env=lenient) as url:
            _s3(url).create_bucket(Bucket=BUCKET)
            show(run_portkey(directory, url, path, args.format, "moto, no minimum part size", cpus), results)
    if args.out:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
