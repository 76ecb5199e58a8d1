#!/usr/bin/env python3
"""Chat relay benchmark: tunegate against Portkey's gateway on the loopback fake upstream.

For each target — `direct` (the fake upstream alone), `portkey` (`@portkey-ai/gateway`, installed and
started by ../shared/bench/gateways/portkey.sh) and `tunegate` (`tunegate run`) — in one run:

1. ttfb: time to the first streamed `data:` event over N sequential small streams (p50/p90); for a
   gateway the *added* time is its value minus direct's.
2. cpu: the gateway's CPU time (user + system, its children included) over streams with many chunks,
   divided by the `data:` events the client received.
3. mem: the gateway's RSS before and its peak while relaying one 10 MB stream, read slowly by the
   client (the gateway must apply back-pressure, not buffer) and then read as fast as possible.
4. rps: non-streamed chat requests/s at c=16 with wrk and ../shared/bench/wrk_json.lua.

    .venv/bin/python bench/chat_bench.py                       # direct, portkey, tunegate
    .venv/bin/python bench/chat_bench.py --targets direct,portkey
    TUNEGATE=/path/to/.venv/bin/tunegate .venv/bin/python bench/chat_bench.py
    .venv/bin/python bench/chat_bench.py --table bench/results/chat-....jsonl   # re-print a run

The stream's size is chosen by the upstream URL path: the fake upstream is started through this
script's `upstream` sub-command, which also answers `POST /s/<chunks>x<bytes>/v1/chat/completions`
as the shared fake's chat handler with `x-bench-chunks` / `x-bench-chunk-bytes` set from the path. A
gateway reaches it through its custom host (`x-portkey-custom-host: http://127.0.0.1:P/s/5000x100/v1`),
so no gateway has to forward the bench headers.

Pinning (taskset lists, '' = no pinning): the gateway on GATEWAY_CPUS (default 1), the fake upstream
on UPSTREAM_CPUS and this client and wrk on CLIENT_CPUS (default 0). Results are JSON lines in
$OUT (default bench/results/chat-<time>.jsonl), then a table with the ratios and pass/miss per
target. SHARED defaults to ../shared/bench, SCRATCH to ${TMPDIR:-/tmp}/tunegate-bench (Portkey is
installed into $SCRATCH/portkey-bench). Everything stays on 127.0.0.1; only the processes this
script starts are stopped, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")
MODEL = "ft:gpt-4o-mini-2024-07-18:org-bench:bench:abc123"
SHAPE_RE = re.compile(r"^/s/(\d+)x(\d+)(/v1/chat/completions)$")

# ------------------------------------------------------------------ fake upstream wrapper


def run_upstream(shared: Path, argv: list[str]) -> None:
    """Runs ../shared/bench/fake_upstream.py with a middleware that maps
    `/s/<chunks>x<bytes>/v1/chat/completions` onto its chat handler with the bench headers set."""
    sys.path.insert(0, str(shared))
    import fake_upstream  # type: ignore[import-not-found]
    from aiohttp import web

    @web.middleware
    async def shaped(request: web.Request, handler: Callable[[web.Request], Any]) -> Any:
        match = SHAPE_RE.match(request.path)
        if match is None:
            return await handler(request)
        headers = request.headers.copy()
        headers["x-bench-chunks"] = match.group(1)
        headers["x-bench-chunk-bytes"] = match.group(2)
        return await fake_upstream.chat_completions(request.clone(headers=headers, rel_url=match.group(3)))

    original = fake_upstream.make_app

    def make_app() -> web.Application:
        app: web.Application = original()
        app.middlewares.append(shaped)
        return app

    fake_upstream.make_app = make_app
    sys.argv = [str(shared / "fake_upstream.py"), *argv]
    fake_upstream.main()


# ------------------------------------------------------------------ /proc helpers


def descendants(pids: Sequence[int]) -> list[int]:
    """The PIDs and all their descendants (by the parent PID in /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in out or not os.path.exists(f"/proc/{pid}"):
            continue
        out.append(pid)
        stack.extend(children.get(pid, []))
    return sorted(out)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes so far (``/proc/PID/stat`` fields 14 and 15)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / CLK


def status_kb(pids: Sequence[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def reset_hwm(pids: Sequence[int]) -> bool:
    """Sets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`)."""
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of some processes every 10 ms and keeps the peak."""

    def __init__(self, pids: Sequence[int]) -> None:
        super().__init__(daemon=True)
        self.pids = list(pids)
        self.peak_kb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pids, "VmRSS"))
            self._halt.wait(0.01)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_kb


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except OSError:
            if pid is not None and not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}"):
                return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def taskset(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def all_cpus() -> str:
    return f"0-{(os.cpu_count() or 1) - 1}"


# ------------------------------------------------------------------ targets


@dataclass
class Target:
    """A name, a chat URL and the headers that route it to the fake upstream (shaped by path)."""

    name: str
    upstream: str  # http://127.0.0.1:P
    gateway: str | None  # http://127.0.0.1:G (None: the upstream itself)
    pids: list[int]
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def request(
        self, chunks: int | None = None, chunk_bytes: int | None = None
    ) -> tuple[str, dict[str, str]]:
        base = f"{self.upstream}/s/{chunks}x{chunk_bytes}/v1" if chunks is not None else f"{self.upstream}/v1"
        headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
        if self.gateway is None:
            return f"{base}/chat/completions", headers
        headers["x-portkey-provider"] = "openai"
        headers["x-portkey-custom-host"] = base
        return f"{self.gateway}/v1/chat/completions", headers


def chat_body(stream: bool) -> bytes:
    return json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}], "stream": stream}
    ).encode()


# ------------------------------------------------------------------ client


@dataclass
class StreamResult:
    status: int
    ttfb: float = 0.0  # seconds from sending the request to the first bytes holding `data:`
    total: float = 0.0
    events: int = 0  # `data:` lines received, [DONE] included
    nbytes: int = 0
    done: bool = False
    error: str = ""


async def stream_once(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    *,
    read_bps: float | None = None,
) -> StreamResult:
    """One `stream: true` request read to the end; `read_bps` paces the reader (16 KiB reads)."""
    body = chat_body(True)
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            text = (await resp.read())[:300].decode(errors="replace")
            return StreamResult(resp.status, error=text)
        result = StreamResult(200)
        carry = b""
        tail = b""
        while True:
            chunk = await (resp.content.read(16384) if read_bps else resp.content.readany())
            if not chunk:
                break
            window = carry + chunk
            found = window.count(b"data:")
            if found and not result.events:
                result.ttfb = time.perf_counter() - t0
            result.events += found
            carry = window[-4:]
            result.nbytes += len(chunk)
            tail = (tail + chunk)[-64:]
            if read_bps:
                ahead = result.nbytes / read_bps - (time.perf_counter() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        result.total = time.perf_counter() - t0
        result.done = tail.rstrip().endswith(b"data: [DONE]")
        return result


async def plain_once(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with session.post(url, data=chat_body(False), headers=headers) as resp:
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw[:300].decode(errors="replace")


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ------------------------------------------------------------------ phases


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.records: list[dict[str, Any]] = []

    def emit(self, rec: dict[str, Any]) -> None:
        rec = {"ts": round(time.time(), 3), **rec}
        self.records.append(rec)
        with self.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    async def check(self, session: aiohttp.ClientSession, target: Target) -> str:
        """'' when plain and streamed chat both relay; else what went wrong."""
        url, headers = target.request()
        status, body = await plain_once(session, url, headers)
        if status != 200 or not isinstance(body, dict) or body.get("object") != "chat.completion":
            return f"plain chat: {status} {json.dumps(body)[:300]}"
        chunks = 16
        url, headers = target.request(chunks, 32)
        res = await stream_once(session, url, headers)
        if res.status != 200 or not res.done:
            return f"streamed chat: {res.status} done={res.done} {res.error}"
        if res.events != chunks + 3:
            return f"streamed chat: {res.events} data events, expected {chunks + 3}"
        return ""

    async def ttfb(self, session: aiohttp.ClientSession, target: Target) -> None:
        a = self.args
        url, headers = target.request(a.ttfb_chunks, a.ttfb_chunk_bytes)
        for _ in range(a.warmup):
            await stream_once(session, url, headers)
        firsts: list[float] = []
        totals: list[float] = []
        bad = 0
        for _ in range(a.ttfb_requests):
            res = await stream_once(session, url, headers)
            if res.status != 200 or not res.done:
                bad += 1
                continue
            firsts.append(res.ttfb * 1000)
            totals.append(res.total * 1000)
        rec: dict[str, Any] = {
            "kind": "ttfb",
            "target": target.name,
            "requests": a.ttfb_requests,
            "errors": bad,
        }
        rec["chunks"], rec["chunk_bytes"] = a.ttfb_chunks, a.ttfb_chunk_bytes
        if firsts:
            rec.update(
                p50_ms=round(pct(firsts, 50), 3),
                p90_ms=round(pct(firsts, 90), 3),
                p99_ms=round(pct(firsts, 99), 3),
                mean_ms=round(statistics.fmean(firsts), 3),
                total_p50_ms=round(pct(totals, 50), 3),
            )
        self.emit(rec)
        print(
            f"  ttfb   {target.name:9} p50 {rec.get('p50_ms')} ms  p90 {rec.get('p90_ms')} ms  errors {bad}"
        )

    async def cpu(self, session: aiohttp.ClientSession, target: Target) -> None:
        a = self.args
        url, headers = target.request(a.cpu_chunks, a.cpu_chunk_bytes)
        await stream_once(session, url, headers)
        pids = descendants(target.pids)
        up = descendants([self.upstream_pid])
        c0, u0, t0 = cpu_seconds(pids), cpu_seconds(up), time.perf_counter()
        events = nbytes = bad = 0
        for _ in range(a.cpu_streams):
            res = await stream_once(session, url, headers)
            if res.status != 200 or not res.done:
                bad += 1
            events += res.events
            nbytes += res.nbytes
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(descendants(target.pids)) - c0
        up_cpu = cpu_seconds(up) - u0
        expected = a.cpu_streams * (a.cpu_chunks + 3)
        rec = {
            "kind": "cpu",
            "target": target.name,
            "streams": a.cpu_streams,
            "chunks": a.cpu_chunks,
            "chunk_bytes": a.cpu_chunk_bytes,
            "events": events,
            "events_expected": expected,
            "bytes": nbytes,
            "errors": bad,
            "wall_s": round(wall, 3),
            "gw_cpu_s": round(cpu, 3),
            "gw_cpu_us_per_chunk": round(cpu / max(events, 1) * 1e6, 3),
            "upstream_cpu_s": round(up_cpu, 3),
            "chunks_per_s": round(events / wall, 1),
            "pids": pids,
        }
        self.emit(rec)
        print(
            f"  cpu    {target.name:9} {rec['gw_cpu_us_per_chunk']} us/chunk "
            f"({cpu:.2f} s over {events} events, {events / wall:.0f} events/s, errors {bad})"
        )

    async def mem(self, session: aiohttp.ClientSession, target: Target, reader: str) -> None:
        a = self.args
        url, headers = target.request(a.mem_chunks, a.mem_chunk_bytes)
        pids = descendants(target.pids)
        before = status_kb(pids, "VmRSS")
        hwm_ok = reset_hwm(pids)
        sampler = RssSampler(pids)
        sampler.start()
        res = await stream_once(
            session, url, headers, read_bps=a.slow_mbps * 1e6 if reader == "slow" else None
        )
        sampled = sampler.stop()
        hwm = status_kb(pids, "VmHWM") if hwm_ok else 0
        peak = max(sampled, hwm)
        rec = {
            "kind": "mem",
            "target": target.name,
            "reader": reader,
            "chunks": a.mem_chunks,
            "chunk_bytes": a.mem_chunk_bytes,
            "status": res.status,
            "done": res.done,
            "bytes": res.nbytes,
            "events": res.events,
            "secs": round(res.total, 3),
            "rss_before_mb": round(before / 1024, 1),
            "peak_mb": round(peak / 1024, 1),
            "sampled_peak_mb": round(sampled / 1024, 1),
            "hwm_mb": round(hwm / 1024, 1) if hwm_ok else None,
            "growth_mb": round((peak - before) / 1024, 1),
            "error": res.error,
        }
        self.emit(rec)
        print(
            f"  mem    {target.name:9} {reader:4} reader: RSS {rec['rss_before_mb']} -> "
            f"peak {rec['peak_mb']} MB "
            f"(+{rec['growth_mb']}), {res.nbytes / 1e6:.1f} MB in {res.total:.2f} s, done={res.done}"
        )

    def rps(self, target: Target) -> None:
        a = self.args
        url, headers = target.request()
        lua = self.shared / "wrk_json.lua"
        with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
            f.write(chat_body(False))
            body_file = f.name
        env = {**os.environ, "WRK_METHOD": "POST", "WRK_BODY_FILE": body_file}

        def wrk(duration: int) -> dict[str, Any]:
            cmd = [
                *taskset(a.client_cpus),
                "wrk",
                "-t1",
                f"-c{a.rps_conc}",
                f"-d{duration}s",
                "--timeout=10s",
            ]
            cmd += ["-s", str(lua)]
            for k, v in headers.items():
                cmd += ["-H", f"{k}: {v}"]
            cmd.append(url)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60)
            for line in proc.stdout.splitlines():
                if line.startswith("WRKJSON "):
                    parsed: dict[str, Any] = json.loads(line[8:])
                    return parsed
            raise RuntimeError(f"wrk failed rc={proc.returncode}: {proc.stdout[-400:]} {proc.stderr[-400:]}")

        try:
            if a.rps_warmup:
                wrk(a.rps_warmup)
            pids = descendants(target.pids)
            c0 = cpu_seconds(pids)
            res = wrk(a.rps_duration)
            cpu = cpu_seconds(descendants(target.pids)) - c0
        finally:
            os.unlink(body_file)
        reqs = max(int(res["requests"]), 1)
        secs = res["duration_us"] / 1e6
        errors = sum(int(v) for v in res["errors"].values())
        rec = {
            "kind": "rps",
            "target": target.name,
            "conc": a.rps_conc,
            "duration_s": round(secs, 3),
            "requests": res["requests"],
            "rps": round(res["requests"] / secs, 1),
            "p50_ms": res["lat_us"]["p50"] / 1000,
            "p90_ms": res["lat_us"]["p90"] / 1000,
            "p99_ms": res["lat_us"]["p99"] / 1000,
            "errors": errors,
            "gw_cpu_us_per_req": round(cpu / reqs * 1e6, 1),
        }
        self.emit(rec)
        print(
            f"  rps    {target.name:9} {rec['rps']} req/s at c={a.rps_conc}, p50 {rec['p50_ms']} ms, "
            f"{rec['gw_cpu_us_per_req']} us CPU/req, errors {errors}"
        )

    # ---------------------------------------------------------- gateways

    @property
    def shared(self) -> Path:
        return Path(self.args.shared)

    def start_portkey(self, logs: Path) -> Target:
        a = self.args
        script = self.shared / "gateways" / "portkey.sh"
        pdir = Path(a.portkey_dir)
        if not (pdir / "node_modules/@portkey-ai/gateway/build/start-server.js").exists():
            subprocess.run(["bash", str(script), "install", str(pdir)], check=True)
        port = free_port()
        env = {**os.environ, "GATEWAY_CPUS": a.gateway_cpus or all_cpus()}
        out = subprocess.run(
            ["bash", str(script), "start", str(pdir), str(port), str(logs / "portkey.log")],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        pid = int(out.stdout.strip().splitlines()[-1])
        self.started.append(pid)
        vers = subprocess.run(
            [
                "node",
                "-e",
                'const v=m=>require("./node_modules/"+m+"/package.json").version; '
                "console.log(`@portkey-ai/gateway ${v('@portkey-ai/gateway')} "
                "@hono/node-server ${v('@hono/node-server')} hono ${v('hono')} node ${process.version}`)",
            ],
            cwd=pdir,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return Target("portkey", self.upstream, f"http://127.0.0.1:{port}", [pid], note=vers)

    def start_tunegate(self, logs: Path, data_dir: Path) -> Target:
        a = self.args
        exe = Path(a.tunegate)
        port, grpc_port = free_port(), free_port()
        upstream_port = self.upstream.rsplit(":", 1)[1]
        config = data_dir / "bench.toml"
        config.write_text(f'[routing]\nallowed_custom_hosts = ["127.0.0.1:{upstream_port}"]\n')
        pin = taskset(a.gateway_cpus or all_cpus())
        common = ["--config", str(config), "--data-dir", str(data_dir), "--grpc-port", str(grpc_port)]
        common += ["--log-level", "WARNING"]
        http = ["--http-port", str(port)]
        if a.tunegate_mode == "split":
            cmds = [
                ("tunegate-server", [*pin, str(exe), "server", *common]),
                (
                    "tunegate-edge",
                    [*pin, str(exe), "edge", *common, *http, "--grpc-target", f"127.0.0.1:{grpc_port}"],
                ),
            ]
        else:
            cmds = [("tunegate", [*pin, str(exe), "run", *common, *http])]
        pids: list[int] = []
        for name, cmd in cmds:
            with (logs / f"{name}.log").open("wb") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            self.started.append(proc.pid)
            pids.append(proc.pid)
        wait_http(f"http://127.0.0.1:{port}/healthz", pid=pids[-1])
        repo = exe.resolve().parents[2] if exe.parent.name == "bin" else exe.parent
        rev = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True
        ).stdout.strip()
        branch = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        return Target(
            "tunegate",
            self.upstream,
            f"http://127.0.0.1:{port}",
            pids,
            note=f"{exe} {a.tunegate_mode} {branch} {rev}",
        )

    # ---------------------------------------------------------- run

    async def measure(self, target: Target) -> None:
        timeout = aiohttp.ClientTimeout(total=600)
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            problem = await self.check(session, target)
            self.emit({"kind": "check", "target": target.name, "ok": not problem, "problem": problem})
            if problem:
                print(f"  check  {target.name:9} FAILED: {problem}")
                return
            print(f"  check  {target.name:9} ok ({target.note})")
            phases = self.args.phases
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("ttfb", lambda: self.ttfb(session, target)),
                ("mem", lambda: self.mem(session, target, "slow")),
                ("mem", lambda: self.mem(session, target, "fast")),
                ("cpu", lambda: self.cpu(session, target)),
            ]
            for phase, step in steps:
                if phase in phases:
                    try:
                        await step()
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        self.failed(target, phase, exc)
        if "rps" in phases:
            try:
                self.rps(target)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                self.failed(target, "rps", exc)

    def failed(self, target: Target, phase: str, exc: BaseException) -> None:
        """Records a phase that could not finish (the gateway died, timed out, ...) and goes on."""
        problem = f"{type(exc).__name__}: {exc}"
        self.emit({"kind": "error", "target": target.name, "phase": phase, "problem": problem})
        print(f"  {phase:6} {target.name:9} FAILED: {problem}")

    def run(self) -> None:
        a = self.args
        scratch = Path(a.scratch)
        logs = scratch / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.started: list[int] = []
        up_port = free_port()
        self.upstream = f"http://127.0.0.1:{up_port}"
        cmd = [*taskset(a.upstream_cpus or all_cpus()), a.upstream_python, str(Path(__file__).resolve())]
        cmd += ["upstream", "--shared", str(self.shared), "--", "--port", str(up_port)]
        with (logs / "chat-upstream.log").open("wb") as log:
            up = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(up.pid)
        self.upstream_pid = up.pid
        if a.client_cpus:
            os.sched_setaffinity(0, parse_cpus(a.client_cpus))
        data_dir = Path(tempfile.mkdtemp(prefix="chat-bench-", dir=scratch))
        try:
            wait_http(f"{self.upstream}/_bench/health", pid=up.pid)
            self.emit(
                {
                    "kind": "meta",
                    "host": platform.node(),
                    "cpus": os.cpu_count(),
                    "loadavg": os.getloadavg(),
                    "gateway_cpus": a.gateway_cpus,
                    "upstream_cpus": a.upstream_cpus,
                    "client_cpus": a.client_cpus,
                    "upstream": f"{self.upstream} pid={up.pid} aiohttp {aiohttp.__version__}",
                    "args": {k: v for k, v in vars(a).items() if k != "table"},
                }
            )
            print(f"# fake upstream {self.upstream} pid={up.pid}; results -> {self.out}")
            for name in a.targets:
                if name == "direct":
                    target = Target("direct", self.upstream, None, [up.pid], note="fake upstream")
                elif name == "portkey":
                    target = self.start_portkey(logs)
                elif name == "tunegate":
                    target = self.start_tunegate(logs, data_dir)
                else:
                    raise SystemExit(f"unknown target {name}")
                self.emit({"kind": "target", "target": target.name, "pids": target.pids, "note": target.note})
                try:
                    with asyncio.Runner(loop_factory=loop_factory()) as runner:
                        runner.run(self.measure(target))
                finally:
                    if target.gateway is not None:
                        for pid in target.pids:
                            stop_pid(pid)
                            self.started.remove(pid)
            self.emit({"kind": "end", "loadavg": os.getloadavg()})
        finally:
            for pid in self.started:
                stop_pid(pid)
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (a cheaper client), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def parse_cpus(spec: str) -> set[int]:
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


# ------------------------------------------------------------------ table


def table(records: list[dict[str, Any]]) -> str:
    def get(kind: str, target: str, **match: Any) -> dict[str, Any] | None:
        for rec in records:
            if (
                rec.get("kind") == kind
                and rec.get("target") == target
                and all(rec.get(k) == v for k, v in match.items())
            ):
                return rec
        return None

    def val(kind: str, target: str, key: str, **match: Any) -> float | None:
        rec = get(kind, target, **match)
        return None if rec is None or rec.get(key) is None else float(rec[key])

    def fmt(v: float | None, spec: str = ".3f") -> str:
        return "-" if v is None else format(v, spec)

    names = ["direct", "portkey", "tunegate"]
    lines = []
    for name in names:
        chk = get("check", name)
        if chk is not None and not chk["ok"]:
            lines.append(f"# {name}: check failed: {chk['problem']}")
    for rec in records:
        if rec.get("kind") == "error":
            lines.append(f"# {rec['target']}: {rec['phase']} failed: {rec['problem']}")
    head = f"{'metric':34} {'direct':>9} {'portkey':>9} {'tunegate':>9} {'tg/pk':>7} {'target':>8}  result"
    lines += [head, "-" * len(head)]

    def row(
        label: str, values: list[float | None], spec: str, ratio: float | None, target: str, ok: bool | None
    ) -> None:
        result = "" if ok is None else ("pass" if ok else "MISS")
        cells = " ".join(f"{fmt(v, spec):>9}" for v in values)
        lines.append(f"{label:34} {cells} {fmt(ratio, '.2f'):>7} {target:>8}  {result}")

    def ratio(tg: float | None, pk: float | None) -> float | None:
        return None if tg is None or pk is None or pk == 0 else tg / pk

    for q in ("p50", "p90"):
        vals = [val("ttfb", n, f"{q}_ms") for n in names]
        row(f"first chunk {q} ms", vals, ".3f", None, "", None)
    for q in ("p50", "p90"):
        vals = [val("ttfb", n, f"{q}_ms") for n in names]
        direct = vals[0]
        added = [None if v is None or direct is None else v - direct for v in vals]
        added[0] = None
        r = ratio(added[2], added[1])
        ok = None if r is None else r <= 0.5
        row(
            f"added first chunk {q} ms",
            added,
            ".3f",
            r,
            "<=0.5" if q == "p50" else "",
            ok if q == "p50" else None,
        )
    vals = [val("cpu", n, "gw_cpu_us_per_chunk") for n in names]
    r = ratio(vals[2], vals[1])
    row("CPU us per streamed chunk", vals, ".2f", r, "<=1", None if r is None else r <= 1)
    vals = [val("cpu", n, "chunks_per_s") for n in names]
    row("streamed chunks/s (one stream)", vals, ".0f", ratio(vals[2], vals[1]), "", None)
    for reader in ("slow", "fast"):
        before = [val("mem", n, "rss_before_mb", reader=reader) for n in names]
        growth = [val("mem", n, "growth_mb", reader=reader) for n in names]
        secs = [val("mem", n, "secs", reader=reader) for n in names]
        tg = growth[2]
        row(f"RSS before MB ({reader} reader)", before, ".1f", None, "", None)
        row(
            f"RSS growth MB, 10 MB stream {reader}",
            growth,
            ".1f",
            None,
            "<=16MB",
            None if tg is None else tg <= 16,
        )
        row(f"  stream secs ({reader} reader)", secs, ".2f", None, "", None)
    vals = [val("rps", n, "rps") for n in names]
    r = ratio(vals[2], vals[1])
    conc = next((rec["conc"] for rec in records if rec.get("kind") == "rps"), 16)
    row(f"chat req/s (stream false) c={conc}", vals, ".0f", r, ">=1.25", None if r is None else r >= 1.25)
    vals = [val("rps", n, "gw_cpu_us_per_req") for n in names]
    row("  CPU us per request", vals, ".0f", ratio(vals[2], vals[1]), "", None)
    vals = [val("rps", n, "errors") for n in names]
    row("  errors", vals, ".0f", None, "", None)
    meta = next((rec for rec in records if rec.get("kind") == "meta"), None)
    end = next((rec for rec in records if rec.get("kind") == "end"), None)
    if meta is not None:
        load = [meta.get("loadavg"), end.get("loadavg") if end else None]
        lines.append(
            f"# {meta.get('cpus')} cpus, gateway pinned to {meta.get('gateway_cpus') or 'any'}; "
            f"loadavg {load}"
        )
    for rec in records:
        if rec.get("kind") == "target":
            lines.append(f"# {rec['target']}: {rec['note']}")
    return "\n".join(lines)


# ------------------------------------------------------------------ main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        up = argparse.ArgumentParser(prog="chat_bench.py upstream")
        up.add_argument("--shared", required=True)
        up.add_argument("rest", nargs="*")
        ua = up.parse_args(sys.argv[2:])
        run_upstream(Path(ua.shared), ua.rest)
        return
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default=env("TARGETS", "direct,portkey,tunegate"))
    parser.add_argument("--phases", default=env("PHASES", "ttfb,mem,cpu,rps"), help="ttfb,mem,cpu,rps")
    parser.add_argument("--shared", default=env("SHARED", str(ROOT.parent / "shared" / "bench")))
    parser.add_argument(
        "--scratch", default=env("SCRATCH", os.path.join(env("TMPDIR", "/tmp"), "tunegate-bench"))
    )
    parser.add_argument("--portkey-dir", default=env("PORTKEY_DIR"), help="default $SCRATCH/portkey-bench")
    parser.add_argument("--tunegate", default=env("TUNEGATE", str(ROOT / ".venv" / "bin" / "tunegate")))
    parser.add_argument(
        "--tunegate-mode",
        choices=["run", "split"],
        default=env("TUNEGATE_MODE", "run"),
        help="run: one `tunegate run` process; split: `tunegate server` + `tunegate edge` (both measured)",
    )
    parser.add_argument("--upstream-python", default=env("UPSTREAM_PYTHON", sys.executable))
    parser.add_argument("--gateway-cpus", default=env("GATEWAY_CPUS", "1"))
    parser.add_argument("--upstream-cpus", default=env("UPSTREAM_CPUS", "0"))
    parser.add_argument("--client-cpus", default=env("CLIENT_CPUS", "0"))
    parser.add_argument("--warmup", type=int, default=20, help="streams before the ttfb measurement")
    parser.add_argument("--ttfb-requests", type=int, default=200)
    parser.add_argument("--ttfb-chunks", type=int, default=16)
    parser.add_argument("--ttfb-chunk-bytes", type=int, default=32)
    parser.add_argument("--cpu-streams", type=int, default=20)
    parser.add_argument("--cpu-chunks", type=int, default=5000)
    parser.add_argument("--cpu-chunk-bytes", type=int, default=100)
    parser.add_argument("--mem-chunks", type=int, default=10000)
    parser.add_argument("--mem-chunk-bytes", type=int, default=1000)
    parser.add_argument("--slow-mbps", type=float, default=2.0, help="slow reader pace, MB/s")
    parser.add_argument("--rps-conc", type=int, default=16)
    parser.add_argument("--rps-duration", type=int, default=int(env("DURATION", "10")))
    parser.add_argument("--rps-warmup", type=int, default=2)
    parser.add_argument("--out", default=env("OUT"))
    parser.add_argument("--table", nargs="+", metavar="JSONL", help="only print the table of earlier runs")
    args = parser.parse_args()
    if args.table:
        records = [
            json.loads(line) for path in args.table for line in Path(path).read_text().splitlines() if line
        ]
        print(table(records))
        return
    args.targets = [t for t in args.targets.split(",") if t]
    args.phases = [p for p in args.phases.split(",") if p]
    args.portkey_dir = args.portkey_dir or os.path.join(args.scratch, "portkey-bench")
    out = Path(args.out or ROOT / "bench" / "results" / f"chat-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, out)
    bench.run()
    print()
    print(table(bench.records))


if __name__ == "__main__":
    main()
