#!/usr/bin/env python3
"""Upload benchmark: one large multipart upload through the REST edge into the gRPC server.

Starts `tunegate server` and `tunegate edge` as two processes (so each one's memory can be read),
uploads a generated chat-format JSONL file with `../shared/bench/upload.py` (sendfile, exact
Content-Length, almost no client CPU), and reports MB/s plus each process's RSS before the upload
and its peak during it (VmHWM, reset just before via /proc/PID/clear_refs, and a 10 ms sampler).

    .venv/bin/python bench/upload_bench.py --size 1G [--reps 2] [--cpus 1]

Everything stays on 127.0.0.1. Only the processes this script starts are stopped, by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"
sys.path.insert(0, str(SHARED_BENCH))

import upload as uploader  # type: ignore[import-not-found]  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (``/proc/PID/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_hwm(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Sampler(threading.Thread):
    """Samples the summed RSS of some PIDs every 10 ms and keeps the peak per PID."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], status_kb(pid, "VmRSS"))
            time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G", help="file size for gen_jsonl.py (100M, 1G, ...)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--cpus", default="1", help="taskset list for the gateway ('' = no pinning)")
    parser.add_argument(
        "--scratch", default=os.environ.get("SCRATCH", f"{tempfile.gettempdir()}/tunegate-bench")
    )
    parser.add_argument("--out", help="append JSON records here")
    args = parser.parse_args()

    scratch = Path(args.scratch)
    data = scratch / "data" / f"train_{args.size}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(SHARED_BENCH / "gen_jsonl.py"), str(data), args.size],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(data, "rb") as f:  # keep the payload in the page cache: measure the gateway, not the disk
        while f.read(16 << 20):
            pass

    data_dir = Path(tempfile.mkdtemp(prefix="tunegate-bench-data-", dir=scratch))
    config = data_dir / "bench.toml"
    limit = max(data.stat().st_size + (1 << 20), 512 * 1024 * 1024)
    config.write_text(f"[server]\nmax_file_bytes = {limit}\n")
    grpc_port, http_port = free_port(), free_port()
    tunegate = str(Path(sys.executable).parent / "tunegate")
    pin = ["taskset", "-c", args.cpus] if args.cpus else []
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
    logs = open(data_dir / "gateway.log", "wb")  # noqa: SIM115 - lives as long as the processes
    server = subprocess.Popen([*pin, tunegate, "server", *common], stdout=logs, stderr=logs)
    edge = subprocess.Popen(
        [
            *pin,
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
    )
    records: list[dict[str, Any]] = []
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz")
        # taskset execs the program, so the PIDs are the gateway processes themselves.
        pids = {"server": server.pid, "edge": edge.pid}
        for rep in range(args.reps):
            rss0 = {name: status_kb(pid, "VmRSS") for name, pid in pids.items()}
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for pid in pids.values():
                reset_hwm(pid)
            sampler = Sampler(list(pids.values()))
            sampler.start()
            result = uploader.upload(
                f"http://127.0.0.1:{http_port}/v1", str(data), {"Authorization": "Bearer sk-bench"}
            )
            sampler.stop_event.set()
            sampler.join()
            hwm = {name: status_kb(pid, "VmHWM") for name, pid in pids.items()}
            cpu = {name: round(cpu_seconds(pid) - cpu0[name], 2) for name, pid in pids.items()}
            record = {
                "size": args.size,
                "rep": rep + 1,
                "status": result["status"],
                "ok": result["status"] == 200 and result["response"].get("bytes") == result["file_bytes"],
                "file_bytes": result["file_bytes"],
                "seconds": result["seconds"],
                "MBps": result["MBps"],
                "cpu_s": cpu,
                "rss0_mb": {k: round(v / 1024, 1) for k, v in rss0.items()},
                "hwm_mb": {k: round(v / 1024, 1) for k, v in hwm.items()},
                "growth_mb": round(sum(hwm[k] - rss0[k] for k in pids) / 1024, 1),
                "sampled_peak_mb": {k: round(sampler.peak[pid] / 1024, 1) for k, pid in pids.items()},
                "cpus": args.cpus or "any",
            }
            records.append(record)
            print(json.dumps(record))
            file_id = result["response"].get("id")
            if file_id:  # free the disk for the next repetition
                req = urllib.request.Request(
                    f"http://127.0.0.1:{http_port}/v1/files/{file_id}",
                    method="DELETE",
                    headers={"Authorization": "Bearer sk-bench"},
                )
                urllib.request.urlopen(req, timeout=60).close()
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
    if args.out:
        with open(args.out, "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
