"""Small helpers shared by the Bedrock benches (`convert_bench`, `s3_upload_bench`,
`bedrock_upload_bench`): sizes, loopback ports, a moto S3 server in its own process, and a
process's memory and CPU read from /proc.

Imported as a top-level module: each bench runs as `python bench/NAME.py`, which puts this
folder first on `sys.path`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

MB = 1_000_000
MiB = 1 << 20


def parse_size(s: str) -> int:
    """Bytes in a size such as `256M`, `1G`, `64MiB` or `1048576` (binary multiples)."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = s.strip().upper().rstrip("B").rstrip("I")
    return int(float(s[:-1]) * mult[s[-1]]) if s[-1] in mult else int(s)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def status_kib(field: str, pid: int | str = "self") -> int:
    """A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, …)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int | str = "self") -> None:
    """Reset the process's VmHWM (peak RSS) to its current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds(pid: int | str = "self") -> float:
    """The process's user + system CPU time so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(cpus: str | None) -> list[str]:
    """`taskset -c CPUS` as a command prefix, or nothing when `cpus` is empty."""
    return ["taskset", "-c", cpus] if cpus else []


@contextmanager
def moto_server(*, cpus: str | None = None, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """moto's server (`python -m moto.server`) in its own process on 127.0.0.1, optionally pinned
    to `cpus` and with extra environment (e.g. `S3_UPLOAD_PART_MIN_SIZE`); yields its URL. Only
    the process started here is stopped."""
    port = free_port()
    proc = subprocess.Popen(
        [*pin(cpus), sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto's server exited") from None
                time.sleep(0.05)
        else:
            raise RuntimeError("moto's server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
