#!/usr/bin/env python3
"""S3 blob store: a 1 GiB file through the gateway (edge → server → moto's S3), beside moto's
own ingest rate for a direct multipart upload.

    .venv/bin/python bench/s3_blobs_bench.py [--size 1G] [--reps 2] [--cpus 1] [--moto-cpus 0]

1. moto's server runs in its own process (`benchlib.moto_server`, pinned to `--moto-cpus`).
2. Direct: boto3's `upload_file` (8 MiB parts, 2 in flight, like the gateway's writer) sends the
   generated file straight to moto: MB/s over the call. This is what moto itself can ingest here.
3. Gateway: `tunegate server` and `tunegate edge` (pinned to `--cpus`) with
   `[blobs] url = "s3://<bucket>/bench"` on moto; the file is uploaded with `POST /v1/files` by
   `../shared/bench/upload.py` (sendfile, exact Content-Length), exactly as `upload_bench.py`
   does. Reported: MB/s, each process's peak RSS growth (VmHWM after a reset through
   /proc/PID/clear_refs, minus VmRSS before), CPU seconds, and a HeadObject of the stored object
   (its size must equal the file's). The file is deleted afterwards through the API. A 24 MiB
   warm-up upload goes first, so one-time costs (botocore loading its S3 model, the first
   connections) are not counted as the upload's memory.

Everything stays on 127.0.0.1; only the processes started here are stopped, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import upload_bench
from benchlib import MB, MiB, free_port, moto_server, pin
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from upload_bench import SHARED_BENCH, Sampler, cpu_seconds, reset_hwm, status_kb, wait_http

uploader: Any = upload_bench.uploader  # type: ignore[attr-defined]  # ../shared/bench/upload.py

BUCKET = "tunegate-bench"
AUTH = {"Authorization": "Bearer sk-bench"}
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def direct_upload(s3: Any, data: Path) -> dict[str, Any]:
    """moto's ingest rate: boto3 multipart straight to the bucket."""
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=2)
    started = time.perf_counter()
    s3.upload_file(str(data), BUCKET, "direct/object", Config=config)
    seconds = time.perf_counter() - started
    size = s3.head_object(Bucket=BUCKET, Key="direct/object")["ContentLength"]
    s3.delete_object(Bucket=BUCKET, Key="direct/object")
    return {
        "run": "direct",
        "ok": size == data.stat().st_size,
        "seconds": round(seconds, 2),
        "MBps": round(size / MB / seconds, 1),
    }


def gateway_uploads(s3: Any, moto_url: str, data: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    scratch = Path(args.scratch)
    data_dir = Path(tempfile.mkdtemp(prefix="tunegate-s3-bench-", dir=scratch))
    config = data_dir / "bench.toml"
    limit = max(data.stat().st_size + MiB, 512 * MiB)
    config.write_text(
        f"[server]\nmax_file_bytes = {limit}\n\n"
        f'[blobs]\nurl = "s3://{BUCKET}/bench"\nendpoint_url = "{moto_url}"\nregion = "us-east-1"\n'
    )
    grpc_port, http_port = free_port(), free_port()
    tunegate = str(Path(sys.executable).parent / "tunegate")
    common = [
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--grpc-port",
        str(grpc_port),
        "--log-level",
        "WARNING",
    ]
    env = {**os.environ, **CREDENTIALS}
    logs = open(data_dir / "gateway.log", "wb")  # noqa: SIM115 - lives as long as the processes
    server = subprocess.Popen(
        [*pin(args.cpus), tunegate, "server", *common], stdout=logs, stderr=logs, env=env
    )
    edge = subprocess.Popen(
        [
            *pin(args.cpus),
            tunegate,
            "edge",
            *common,
            "--http-port",
            str(http_port),
            "--grpc-target",
            f"127.0.0.1:{grpc_port}",
        ],
        stdout=logs,
        stderr=logs,
        env=env,
    )
    records: list[dict[str, Any]] = []
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz")
        pids = {"server": server.pid, "edge": edge.pid}  # taskset execs: these are the gateway
        warm = Path(args.scratch) / "data" / "warm-up.jsonl"  # first use: botocore's models, pools
        warm.write_bytes(
            data.read_bytes()[: 3 * 8 * MiB + 1] if data.stat().st_size > 25 * MiB else data.read_bytes()
        )
        _delete(http_port, uploader.upload(f"http://127.0.0.1:{http_port}/v1", str(warm), AUTH)["response"])
        for rep in range(args.reps):
            rss0 = {name: status_kb(pid, "VmRSS") for name, pid in pids.items()}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for pid in pids.values():
                reset_hwm(pid)
            sampler = Sampler(list(pids.values()))
            sampler.start()
            result = uploader.upload(f"http://127.0.0.1:{http_port}/v1", str(data), AUTH)
            sampler.stop_event.set()
            sampler.join()
            hwm = {name: status_kb(pid, "VmHWM") for name, pid in pids.items()}
            listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="bench/").get("Contents", [])
            stored = [item["Size"] for item in listing]
            record = {
                "run": "gateway",
                "rep": rep + 1,
                "status": result["status"],
                "ok": result["status"] == 200 and stored == [data.stat().st_size],
                "seconds": result["seconds"],
                "MBps": result["MBps"],
                "cpu_s": {name: round(cpu_seconds(pid) - cpu0[name], 2) for name, pid in pids.items()},
                "growth_mb": {name: round((hwm[name] - rss0[name]) / 1024, 1) for name in pids},
                "rss0_mb": {name: round(value / 1024, 1) for name, value in rss0.items()},
            }
            records.append(record)
            print(json.dumps(record), flush=True)
            _delete(http_port, result["response"])
    finally:
        for proc in (edge, server):
            proc.terminate()
        for proc in (edge, server):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return records


def _delete(http_port: int, file: dict[str, Any]) -> None:
    if file.get("id"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/files/{file['id']}", method="DELETE", headers=AUTH
        )
        urllib.request.urlopen(request, timeout=60).close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G", help="file size for gen_jsonl.py (100M, 1G, ...)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--cpus", default="1", help="taskset list for the gateway ('' = no pinning)")
    parser.add_argument("--moto-cpus", default="0", help="taskset list for moto ('' = no pinning)")
    parser.add_argument(
        "--scratch", default=os.environ.get("SCRATCH", f"{tempfile.gettempdir()}/tunegate-bench")
    )
    parser.add_argument("--out", help="append JSON records here")
    args = parser.parse_args()

    data = Path(args.scratch) / "data" / f"train_{args.size}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(SHARED_BENCH / "gen_jsonl.py"), str(data), args.size],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.environ.update(CREDENTIALS)
    records: list[dict[str, Any]] = []
    with moto_server(cpus=args.moto_cpus or None) as moto_url:
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)
        s3.create_bucket(Bucket=BUCKET)
        for _ in range(args.reps):
            records.append(direct_upload(s3, data))
            print(json.dumps(records[-1]), flush=True)
        records += gateway_uploads(s3, moto_url, data, args)
    if args.out:
        with open(args.out, "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
