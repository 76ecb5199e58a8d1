#!/usr/bin/env python3
"""Local-provider benchmark: training throughput on this CPU, and how the API answers meanwhile.

Starts `tunegate run` (its own data dir, free ports), uploads a generated chat dataset, and:
1. measures `GET /v1/fine_tuning/jobs/{id}` latency (p50/p99 over N sequential requests) while
   no job trains (idle);
2. creates a job on the built-in `tunegate-tiny` model and measures the same GET while it trains;
3. reports the trainer's tokens/s (from its "Training finished … tokens/s" event) and wall time.

    .venv/bin/python bench/local_bench.py [--examples 200] [--epochs 3] [--requests 300]

Everything stays on 127.0.0.1; only the process this script starts is stopped, by PID.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dataset(examples: int) -> bytes:
    lines = []
    for i in range(examples):
        question = f"What is the code word number {i}?"
        answer = f"The code word number {i} is {'abcdefghij'[i % 10] * (3 + i % 5)}."
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "You answer with the code word."},
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        )
    return ("\n".join(lines) + "\n").encode()


def latencies(client: httpx.Client, url: str, count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    samples.sort()
    return {
        "n": count,
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
        "max_ms": round(samples[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="tunegate-local-bench-"))
    http_port, grpc_port = free_port(), free_port()
    tunegate = Path(sys.executable).parent / "tunegate"
    proc = subprocess.Popen(
        [
            str(tunegate),
            "run",
            "--data-dir",
            str(data_dir),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{http_port}/v1"
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(300):
                try:
                    if client.get(f"http://127.0.0.1:{http_port}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            upload = client.post(
                base + "/files",
                data={"purpose": "fine-tune"},
                files={"file": ("bench.jsonl", dataset(args.examples))},
            ).json()
            body = {
                "model": "tunegate-tiny",
                "training_file": upload["id"],
                "seed": 1,
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": args.epochs}},
                },
            }
            # A finished job to poll while idle (the same GET path, no training running).
            first = client.post(
                base + "/fine_tuning/jobs",
                json={
                    **body,
                    "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
                },
            ).json()
            while client.get(base + f"/fine_tuning/jobs/{first['id']}").json()["status"] not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                time.sleep(0.5)
            idle = latencies(client, base + f"/fine_tuning/jobs/{first['id']}", args.requests)

            job = client.post(base + "/fine_tuning/jobs", json=body).json()
            while client.get(base + f"/fine_tuning/jobs/{job['id']}").json()["status"] != "running":
                time.sleep(0.2)
            started = time.perf_counter()
            training = latencies(client, base + f"/fine_tuning/jobs/{job['id']}", args.requests)
            still_running = client.get(base + f"/fine_tuning/jobs/{job['id']}").json()["status"] == "running"
            while (state := client.get(base + f"/fine_tuning/jobs/{job['id']}").json())["status"] not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                time.sleep(0.5)
            wall = time.perf_counter() - started
            events = client.get(base + f"/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()[
                "data"
            ]
            rate = next(
                (float(m.group(1)) for e in events if (m := re.search(r"([0-9.]+) tokens/s", e["message"]))),
                None,
            )
        record = {
            "examples": args.examples,
            "epochs": args.epochs,
            "status": state["status"],
            "trained_tokens": state["trained_tokens"],
            "tokens_per_s": rate,
            "training_wall_s_after_running": round(wall, 1),
            "get_job_idle": idle,
            "get_job_while_training": training,
            "all_training_samples_taken_while_running": still_running,
        }
        print(json.dumps(record))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
