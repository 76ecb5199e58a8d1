#!/usr/bin/env python3
"""Fireworks: a 1 GiB OpenAI chat JSONL file checked and streamed into a dataset through the
signed-URL flow, into the Fireworks fake on loopback; and Portkey's gateway on the same fake.

    .venv/bin/python bench/fireworks_upload_bench.py [--size-mb 1024] [--portkey] [--no-tunegate]

1. The input is the Bedrock bench's generated chat file (`bedrock_upload_bench.dataset`: cached
   under $SCRATCH/bedrock, default /tmp/tunegate-bench/bedrock, with a `LocalBlobStore` root
   holding the same file): system + user + assistant lines of mixed lengths, non-ASCII text.
2. The fake (`python -m tests.fakes.fireworks_upstream`, which checks every request against the
   fireworks-ai SDK's types and writes signed-URL uploads to files) runs in its own process on
   CPU 0, with TMPDIR pointed at $SCRATCH/fireworks/fake so the bench can read what it stored.
3. tunegate (child process on CPU 1): `LocalBlobStore.open_reader` (1 MiB chunks, a worker
   thread per read) → `FireworksProvider().stage_file(...)` with an `Account` on the fake and a
   supervised request, i.e. `aconvert_with(check_lines("supervised"), chunks)` →
   `upload_dataset`: create → `:getUploadEndpoint` → streamed PUT of the file to the signed URL
   (exact Content-Length) → `:validateUpload`. Reports input MB/s over the wall time until
   `stage_file` returns (after validateUpload), the phases (times of the answers, from an httpx
   response hook on the provider's client), the child's peak RSS growth (VmHWM reset through
   /proc/self/clear_refs after a first call to the fake, minus VmRSS then) and CPU seconds, then
   asks `get_file` until the dataset is processed (READY). The parent then checks the fake: no
   violations, the stored file has exactly the input's size and SHA-256, and its example count.
4. With `--portkey`: Portkey's gateway (`@portkey-ai/gateway`, installed by the shared harness's
   `gateways/portkey.sh` into $SCRATCH/portkey, pinned to CPU 1) gets the same file on
   `POST /v1/files` (multipart, sent by the harness's `upload.py`) with `x-portkey-provider:
   fireworks-ai`, `Authorization: Bearer …` and `x-portkey-fireworks-account-id`. Its Fireworks
   base URL is hard-coded to api.fireworks.ai, so a Node preload (`portkey_fireworks_redirect.mjs`)
   points it at the same fake and logs what it sent. Three runs (see the preload): `as-is`,
   `lenient` (a letter-first dataset id, sizes as strings) and `sized` (lenient, plus the real
   size and Content-Length on the PUT). Recorded: HTTP status and answer, MB/s, the node process's
   peak RSS growth and CPU seconds, the preload's log, the fake's violations, and what the fake
   stored (size, SHA-256 against the input, U+FFFD count).

One JSON line per measurement goes to stdout after the human-readable line, and all of them to
`--out` when given. Only the processes started here are stopped, by PID; everything is loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bedrock_upload_bench import CHUNK, SCRATCH, SHARED_BENCH, dataset, ensure_portkey, portkey_version
from benchlib import MB, MiB, cpu_seconds, free_port, pin, reset_peak, status_kib

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
ACCOUNT = "bench-account"
API_KEY = "fw-bench-key"
MODEL = "llama-v3p1-8b-instruct"
FILE_ID = "file-FireworksBench1GiB"
PORTKEY_MODES = ("as-is", "lenient", "sized")
ANSWER_TIMEOUT = 120.0
"""Seconds the client waits on Portkey's socket (for its answer once the file is sent)."""

# --------------------------------------------------------------------------------------------
# The fake


@contextmanager
def fake_fireworks(cpus: str | None, tmp: Path) -> Iterator[str]:
    """The Fireworks fake in its own process (its files under `tmp`); yields its URL."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    proc = subprocess.Popen(
        [*pin(cpus), sys.executable, "-m", "tests.fakes.fireworks_upstream", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if line[:1] != ["listening"]:
            raise RuntimeError(f"the Fireworks fake did not start: {line}")
        yield line[1]
    finally:
        proc.terminate()
        proc.wait(30)


def fake_call(url: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(
        url + path, method=method, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def stored_files(tmp: Path) -> set[Path]:
    return set(tmp.glob("tunegate-fake-*/blob-*"))


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fffd_count(path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        while piece := f.read(8 * MiB):
            count += piece.count("\ufffd".encode())
    return count


def check_stored(tmp: Path, before: set[Path], path: Path, digest: str, state: Any) -> dict[str, Any]:
    """What the fake wrote during a run (the largest file; `put_accepted` says whether it answered
    a signed-URL PUT with 200, else the file is what it read before the PUT failed), against the
    input file."""
    accepted = any(r["method"] == "PUT" and r["status"] == 200 for r in state["requests"])
    new = sorted(stored_files(tmp) - before, key=lambda p: p.stat().st_size)
    if not new:
        return {"put_accepted": accepted, "stored_files": 0}
    stored = new[-1]
    size = stored.stat().st_size
    same = sha256(stored) == digest
    return {
        "put_accepted": accepted,
        "stored_files": len(new),
        "stored_bytes": size,
        "stored_equals_input": same and size == path.stat().st_size,
        "stored_fffd": 0 if same else fffd_count(stored),
    }


# --------------------------------------------------------------------------------------------
# tunegate (run with --child; the parent pins it)


async def _tunegate(url: str, store_root: Path, blob_key: str, size: int) -> dict[str, Any]:
    import httpx
    from tunegate.server.blobs import LocalBlobStore
    from tunegate.server.errors import NotFound
    from tunegate.server.providers.fireworks._provider import FireworksProvider
    from tunegate.server.providers.interface import Account

    rss_start = status_kib("VmRSS")
    store = LocalBlobStore(store_root)
    account = Account(
        provider="fireworks-ai",
        key="fireworks-ai:bench",
        base_url=url,
        credential=API_KEY,
        options={"account_id": ACCOUNT},
    )
    request = {"model": MODEL, "training_file": FILE_ID}
    provider = FireworksProvider()
    answered: dict[str, float] = {}

    async def on_response(response: httpx.Response) -> None:
        what = response.request.url.path.rpartition(":")[2] if ":" in response.request.url.path else ""
        answered[f"{response.request.method} {what}".strip()] = time.perf_counter()

    provider.http.client.event_hooks["response"].append(on_response)
    read = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal read
        async for chunk in store.open_reader(blob_key, CHUNK):
            read += len(chunk)
            yield chunk

    try:
        # One call first: the client, its pool and the imports are made before the baseline.
        with contextlib.suppress(NotFound):
            await provider.get_file(account, f"accounts/{ACCOUNT}/datasets/warm-up")
        rss_before = status_kib("VmRSS")
        reset_peak()
        c0, t0 = time.process_time(), time.perf_counter()
        staged = await provider.stage_file(
            account,
            request,
            file_id=FILE_ID,
            filename=f"{blob_key}.jsonl",
            size=size,
            chunks=chunks(),
            param="training_file",
        )
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
        peak = status_kib("VmHWM")
        gets = 0
        current = staged
        while current.status == "uploaded" and gets < 20:
            current = await provider.get_file(account, staged.id)
            gets += 1
    finally:
        await provider.aclose()
    endpoint_at = answered.get("POST getUploadEndpoint", t0)
    put_at = answered.get("PUT", endpoint_at)
    return {
        "what": "tunegate",
        "input_bytes": size,
        "read_bytes": read,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "mb_s": size / MB / seconds,
        "create_and_endpoint_seconds": endpoint_at - t0,
        "put_seconds": put_at - endpoint_at,
        "put_mb_s": size / MB / (put_at - endpoint_at),
        "validate_seconds": t0 + seconds - put_at,
        "rss_start_mib": rss_start / 1024,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": peak / 1024,
        "rss_growth_mb": (peak - rss_before) * 1024 / MB,
        "staged": staged.id,
        "staged_status": staged.status,
        "status_after_gets": current.status,
        "gets_until_processed": gets,
    }


def run_child(args: argparse.Namespace) -> None:
    result = asyncio.run(_tunegate(args.endpoint, Path(args.store), args.blob_key, int(args.size)))
    print(json.dumps(result), flush=True)


def spawn_child(cpus: str | None, *extra: str) -> dict[str, Any]:
    cmd = [*pin(cpus), sys.executable, str(Path(__file__).resolve()), *extra]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_tunegate(
    url: str, tmp: Path, path: Path, digest: str, store_root: Path, blob_key: str, cpus: str | None
) -> dict[str, Any]:
    fake_call(url, "/_fake/reset", "POST")
    before = stored_files(tmp)
    extra = ["--endpoint", url, "--store", str(store_root), "--blob-key", blob_key]
    result = spawn_child(cpus, "--child", "tunegate", "--size", str(path.stat().st_size), *extra)
    state = fake_call(url, "/_fake/state")
    record = fake_call(url, f"/v1/accounts/{ACCOUNT}/datasets/{result['staged'].rpartition('/')[2]}")
    result.update(check_stored(tmp, before, path, digest, state))
    result["violations"] = state["violations"]
    result["fake_requests"] = [f"{r['method']} {r['path']} {r['status']}" for r in state["requests"]]
    result["dataset_state"] = record.get("state")
    result["dataset_examples"] = int(record.get("exampleCount", 0))
    return result


# --------------------------------------------------------------------------------------------
# Portkey


def start_portkey(
    directory: Path, port: int, env: dict[str, str], log_dir: Path, cpus: str | None
) -> subprocess.Popen[bytes]:
    with open(log_dir / "portkey.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *pin(cpus),
                "node",
                "--import",
                str(SHARED_BENCH / "gateways/bind_loopback.mjs"),
                "--import",
                str(HERE / "portkey_fireworks_redirect.mjs"),
                "node_modules/@portkey-ai/gateway/build/start-server.js",
                f"--port={port}",
                "--headless",
            ],
            cwd=directory,
            env={**os.environ, **env},
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


def run_portkey(
    directory: Path, url: str, tmp: Path, path: Path, digest: str, mode: str, cpus: str | None
) -> dict[str, Any]:
    sys.path.insert(0, str(SHARED_BENCH))
    import upload as uploader  # type: ignore[import-not-found]

    log_dir = SCRATCH / "fireworks" / f"portkey-{mode}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    size = path.stat().st_size
    env = {
        "FIREWORKS_REDIRECT_ENDPOINT": url,
        "FIREWORKS_REDIRECT_LOG": str(log_dir / "fireworks-requests.jsonl"),
        "FIREWORKS_REDIRECT_MODE": mode,
        "FIREWORKS_REDIRECT_SIZE": str(size),
    }
    port = free_port()
    proc = start_portkey(directory, port, env, log_dir, cpus)
    headers = {
        "x-portkey-provider": "fireworks-ai",
        "Authorization": f"Bearer {API_KEY}",
        "x-portkey-fireworks-account-id": ACCOUNT,
    }
    fake_call(url, "/_fake/reset", "POST")
    before = stored_files(tmp)
    error = None
    try:
        rss_before = status_kib("VmRSS", proc.pid)
        reset_peak(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        try:
            up = uploader.upload(
                f"http://127.0.0.1:{port}/v1", str(path), headers, purpose="fine-tune", timeout=ANSWER_TIMEOUT
            )
        except OSError as exc:  # it answered (and closed) before the file was sent, or not at all
            error = f"{type(exc).__name__}: {exc}"
            up = {"status": None, "response": None, "seconds": time.perf_counter() - t0}
        cpu = cpu_seconds(proc.pid) - cpu0
        peak = status_kib("VmHWM", proc.pid)
        if error is not None:  # its answer, seen on a small file that is sent before it comes
            head = log_dir / "head.jsonl"
            with open(path, "rb") as source:
                block = source.read(64 << 10)
            head.write_bytes(block[: block.rfind(b"\n") + 1])
            small = uploader.upload(f"http://127.0.0.1:{port}/v1", str(head), headers, purpose="fine-tune")
            up["small_file"] = {k: small[k] for k in ("status", "file_bytes", "response")}
    finally:
        proc.terminate()
        proc.wait(10)
    sent = [json.loads(line) for line in (log_dir / "fireworks-requests.jsonl").read_text().splitlines()]
    state = fake_call(url, "/_fake/state")
    put = next((r for r in sent if r["method"] == "PUT"), None)
    response = up["response"]
    return {
        "what": "portkey",
        "mode": mode,
        "version": portkey_version(directory),
        "status": up["status"],
        "client_error": error,
        "small_file": up.get("small_file"),
        "response": response if len(json.dumps(response)) < 2000 else str(response)[:2000],
        "input_bytes": size,
        "seconds": up["seconds"],
        "mb_s": size / MB / up["seconds"],
        "cpu_seconds": cpu,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": peak / 1024,
        "rss_growth_mb": (peak - rss_before) * 1024 / MB,
        "fireworks_requests": sent,
        "put_body_bytes": put.get("body_bytes") if put else None,
        "put_fffd": put.get("fffd") if put else None,
        "violations": state["violations"],
        "fake_requests": [
            f"{r['method']} {r['path']} {r['status']} content-length={r['headers'].get('content-length')} "
            f"transfer-encoding={r['headers'].get('transfer-encoding')} file_bytes={r.get('file_bytes')}"
            for r in state["requests"]
        ],
        **check_stored(tmp, before, path, digest, state),
    }


# --------------------------------------------------------------------------------------------


def show(result: dict[str, Any], out: list[dict[str, Any]]) -> None:
    out.append(result)
    if result["what"] == "tunegate":
        ok = result["put_accepted"] and result["stored_equals_input"] and not result["violations"]
        print(
            f"tunegate stage_file: {result['mb_s']:.1f} MB/s ({result['seconds']:.1f} s: create+endpoint "
            f"{result['create_and_endpoint_seconds']:.2f}, PUT {result['put_seconds']:.1f} s = "
            f"{result['put_mb_s']:.1f} MB/s, validate {result['validate_seconds']:.1f} s; CPU "
            f"{result['cpu_seconds']:.1f} s), peak RSS growth {result['rss_growth_mb']:.1f} MB "
            f"({result['rss_before_mib']:.0f} -> {result['rss_peak_mib']:.0f} MiB), dataset "
            f"{result['dataset_state']} with {result['dataset_examples']} examples, stored "
            f"{result.get('stored_bytes')} B, checks {'ok' if ok else 'FAILED'}"
        )
    else:
        print(
            f"Portkey {result['version']} ({result['mode']}): HTTP {result['status']} after "
            f"{result['seconds']:.1f} s = {result['mb_s']:.1f} MB/s, CPU {result['cpu_seconds']:.1f} s, "
            f"peak RSS growth {result['rss_growth_mb']:.1f} MB, PUT body {result['put_body_bytes']} B "
            f"({result['put_fffd']} U+FFFD), PUT accepted by the fake: {result['put_accepted']}"
        )
        print(f"  answer: {json.dumps(result['response'])[:400]}  client error: {result['client_error']}")
        if result["small_file"]:
            small = result["small_file"]
            print(f"  answer on a {small['file_bytes']} B head of the file: {small}")
        for r in result["fireworks_requests"]:
            print(f"  sent: {json.dumps(r)[:400]}")
        for v in result["violations"]:
            print(f"  fake violation: {v[:300]}")
    print(json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="input file size in MiB (default 1024)")
    ap.add_argument("--portkey", action="store_true", help="also run Portkey's gateway on the same file")
    ap.add_argument("--portkey-modes", default=",".join(PORTKEY_MODES), help="comma-separated modes")
    ap.add_argument("--no-tunegate", action="store_true", help="skip tunegate's run")
    ap.add_argument("--cpus", default="1", help="CPU list for the measured process ('' = no pinning)")
    ap.add_argument("--fake-cpus", default="0", help="CPU list for the fake ('' = no pinning)")
    ap.add_argument("--portkey-dir", default=str(SCRATCH / "portkey"))
    ap.add_argument("--out", help="append the JSON results to this file")
    # internal: the measured child process
    ap.add_argument("--child", choices=["tunegate"], help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--blob-key", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args)
        return

    path, store_root, blob_key = dataset(args.size_mb)
    size = path.stat().st_size
    digest = sha256(path)
    input_fffd = fffd_count(path)
    lines = 0
    with open(path, "rb") as f:
        while piece := f.read(8 * MiB):
            lines += piece.count(b"\n")
    print(
        f"input {path}: {size / MB:.1f} MB, {lines} lines, {input_fffd} U+FFFD, sha256 {digest[:16]}…",
        flush=True,
    )
    results: list[dict[str, Any]] = [
        {
            "what": "input",
            "path": str(path),
            "bytes": size,
            "lines": lines,
            "fffd": input_fffd,
            "sha256": digest,
        }
    ]
    cpus = args.cpus or None
    tmp = SCRATCH / "fireworks" / "fake"
    with fake_fireworks(args.fake_cpus or None, tmp) as url:
        if not args.no_tunegate:
            show(run_tunegate(url, tmp, path, digest, store_root, blob_key, cpus), results)
        if args.portkey:
            directory = Path(args.portkey_dir)
            ensure_portkey(directory)
            for mode in args.portkey_modes.split(","):
                show(run_portkey(directory, url, tmp, path, digest, mode, cpus), results)
    if args.out:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
