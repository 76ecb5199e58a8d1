"""The job monitor at scale (issue 22): N running jobs on a fake OpenAI, two `tunegate server`
replicas sharing one PostgreSQL database, and the registry listing with 100,000 stored jobs.

    .venv/bin/python bench/monitor_bench.py --duration 180

What it does:

1. creates a fresh database `tunegate_bench_<random>` on 127.0.0.1:5432 (dropped at the end),
   migrates it (`Database.open`) and seeds it with COPY: `--jobs` running jobs on the configured
   virtual key `team` (`vk:team`, state `created`, status `running`, native id
   `ftjob-bench-<n>`), created so that they fall due evenly over the first `--interval` seconds;
   plus `--list-rows` succeeded jobs (not followed) for the listing owner. Each seeded snapshot is
   what the gateway itself would store for the fake's answer (`with_provider_job`), so a steady
   poll changes nothing, as for a real job that keeps running. The listing owner's jobs are the
   older ones: its first page lies behind the followed jobs in `seq` order. Then `VACUUM
   ANALYZE`, as autovacuum would after a bulk insert (`--analyze-only`: statistics only, no
   visibility map);
2. starts a fake provider (this file, `fake` subcommand: aiohttp, pinned to CPU 0) answering
   `GET /v1/fine_tuning/jobs/{id}` with a running job and `GET /v1/fine_tuning/jobs` with the
   seeded jobs newest first (`limit`, `after`), recording each call's time, job (or `list`) and
   caller (`GET /_bench/stats`); a bench-only trigger on `job_polls` logs every poll a replica
   records (job, replica, time);
3. starts two replicas (`tunegate server`, pinned to CPU 1) with
   `monitor_min_interval_seconds = monitor_max_interval_seconds = --interval`. Both hold the
   virtual key `team`; each reads its secret from its own variable value (`sk-bench-a`,
   `sk-bench-b`), so the fake can tell which replica made a call;
4. after `--warmup` seconds (default: one interval + 15 s) measures until `--duration`:
   polls and upstream calls per minute, per-replica CPU (/proc/PID/stat), and afterwards, over
   the whole run, the gaps between two polls of one job (a duplicate is a gap under half an
   interval: placing a job on its account's polling grid moves one poll by at most that much);
5. stops the replicas, prints EXPLAIN (ANALYZE, BUFFERS) of the monitor's claim and of the two
   listing queries (the statements the repositories send, captured), then starts `tunegate run`
   (monitor off, CPU 1) and times `GET /v1/fine_tuning/jobs?limit=20` — the first page and a
   page `after=` a job 90% of the way down — sequentially from this process (CPU 0), as the
   listing owner, with that process's CPU per request.

`--list-only` seeds the same rows and measures the listing alone (step 5 without the replicas'
window; about a minute):

    .venv/bin/python bench/monitor_bench.py --list-only

`--profile FILE` also records replica 0 over the window with py-spy (raw, collapsed stacks; not
a project dependency: `.venv/bin/pip install py-spy`); `--profile-list FILE` records the listing's
`tunegate run` over its timed requests the same way (py-spy's sampling slows it: time without
it). Prints a Markdown table and one JSON line (also appended to `bench/results/monitor.jsonl`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LIST_TOKEN = "sk-bench-lister"
REPLICA_SECRETS = ("sk-bench-a", "sk-bench-b")
CREATED = 1_767_000_000  # the fake jobs' provider-side created_at


def provider_job(native_id: str, status: str = "running") -> dict[str, Any]:
    """The fake provider's job: the same answer for every call, so a poll changes nothing."""
    return {
        "object": "fine_tuning.job",
        "id": native_id,
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": CREATED,
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "org-bench",
        "result_files": [],
        "status": status,
        "validation_file": None,
        "training_file": "file-bench",
        "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8},
        "trained_tokens": None,
        "error": None,
        "user_provided_suffix": None,
        "seed": 42,
        "estimated_finish": None,
        "integrations": [],
        "metadata": None,
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.8}
            },
        },
    }


def pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise SystemExit(f"port {port} not ready after {timeout}s")


# -- the fake provider ---------------------------------------------------------------------------


def run_fake(port: int, jobs: int) -> None:
    from aiohttp import web

    pin(0)
    calls: list[tuple[float, str, str]] = []  # (time, native id or "list", caller's bearer token)
    newest_first = [f"ftjob-bench-{n}" for n in reversed(range(jobs))]  # as OpenAI lists them
    position = {native_id: i for i, native_id in enumerate(newest_first)}

    async def get_job(request: web.Request) -> web.Response:
        native_id = request.match_info["job_id"]
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        calls.append((time.time(), native_id, token))
        return web.json_response(provider_job(native_id))

    async def list_jobs(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        calls.append((time.time(), "list", token))
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        start = position[after] + 1 if after in position else 0
        chunk = newest_first[start : start + limit]
        data = [provider_job(native_id) for native_id in chunk]
        return web.json_response({"object": "list", "data": data, "has_more": start + limit < jobs})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(calls)

    app = web.Application()
    app.router.add_get("/v1/fine_tuning/jobs", list_jobs)
    app.router.add_get("/v1/fine_tuning/jobs/{job_id}", get_job)
    app.router.add_get("/_bench/stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the database --------------------------------------------------------------------------------


async def create_database(name: str) -> str:
    import asyncpg
    from tunegate.server.store import Database

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    database = await Database.open(url)  # runs the migrations
    await database.close()
    return url


async def drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _row(
    owner: str, native_id: str, status: str, created_at: int, request: dict[str, Any]
) -> tuple[Any, ...]:
    from tunegate.server.ids import new_id
    from tunegate.server.jobs._render import with_provider_job
    from tunegate.server.providers._openai import without_tag
    from tunegate.server.store import JobRecord

    record = JobRecord(
        id=new_id("ftjob-"),
        owner=owner,
        provider="openai",
        account_key="vk:team",
        state="created",
        status=status,
        request=request,
        request_hash=hashlib.sha256(native_id.encode()).hexdigest(),
        created_at=created_at,
        updated_at=created_at,
        native_id=native_id,
        attempted=True,
    )
    record = with_provider_job(record, without_tag(provider_job(native_id, status)))
    return (
        record.id,
        record.owner,
        record.provider,
        record.account_key,
        record.native_id,
        record.state,
        record.status,
        json.dumps(record.request),
        record.request_hash,
        json.dumps(record.snapshot),
        True,
        False,
        record.created_at,
        record.updated_at,
    )


COLUMNS = (
    "id",
    "owner",
    "provider",
    "account_key",
    "native_id",
    "state",
    "status",
    "request",
    "request_hash",
    "snapshot",
    "attempted",
    "cancel_requested",
    "created_at",
    "updated_at",
)


async def seed(
    db_name: str, *, jobs: int, list_rows: int, interval: float, due_from: float, vacuum: bool
) -> str:
    """Seeds the followed jobs and the listing owner's; returns the id of the listing owner's job
    90% of the way down its newest-first list (the deep `after` cursor). Then `VACUUM ANALYZE`
    (`vacuum`), what autovacuum does to a table after a bulk insert — statistics, and the
    visibility map that lets a scan answer from an index alone — or `ANALYZE` only."""
    import asyncpg
    from tunegate.server.owner import owner_from_token

    request = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-bench"}
    # Due at created_at + interval: spread evenly over [due_from, due_from + interval).
    followed = [
        _row(
            "key:bench",
            f"ftjob-bench-{n}",
            "running",
            int(due_from - interval + n * interval / jobs),
            request,
        )
        for n in range(jobs)
    ]
    lister = owner_from_token(LIST_TOKEN)
    listed = [
        _row(lister, f"ftjob-listed-{n}", "succeeded", int(due_from) - 86_400 + n, request)
        for n in range(list_rows)
    ]
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{db_name}")
    try:
        await conn.copy_records_to_table("jobs", records=listed, columns=COLUMNS)
        await conn.copy_records_to_table("jobs", records=followed, columns=COLUMNS)
        await conn.execute(POLL_LOG)
        await conn.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
    finally:
        await conn.close()
    deep = listed[list_rows // 10][0] if list_rows else ""  # seq ascending: 10% from the oldest
    return str(deep)


POLL_LOG = """
CREATE TABLE bench_polls (job_id text NOT NULL, holder text, at double precision NOT NULL);
CREATE FUNCTION bench_log_poll() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO bench_polls VALUES (NEW.job_id, OLD.holder, extract(epoch FROM clock_timestamp()));
  RETURN NULL;
END $$;
CREATE TRIGGER bench_log_poll AFTER UPDATE ON job_polls
  FOR EACH ROW WHEN (NEW.polls > OLD.polls) EXECUTE FUNCTION bench_log_poll();
"""
"""Every poll a replica records (`schedule_many` counts it, clearing the lease): when, which job,
by which replica — a bench-only trigger in the bench's own database (its cost is PostgreSQL's)."""


async def poll_log(db_name: str) -> list[tuple[str, str, float]]:
    import asyncpg

    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{db_name}")
    try:
        rows = await conn.fetch("SELECT job_id, holder, at FROM bench_polls ORDER BY at")
    finally:
        await conn.close()
    return [(r["job_id"], r["holder"] or "", float(r["at"])) for r in rows]


async def sessions(db_name: str) -> int:
    """Connections opened to the database so far (`pg_stat_database.sessions`)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        value = await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = $1", db_name)
    finally:
        await conn.close()
    return int(value or 0)


async def explain(url: str, lister_owner: str, deep_id: str) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the monitor's claim and the registry listing
    send, captured from the repositories themselves (the claim then leases one batch, so this
    runs after the replicas stopped)."""
    import sqlalchemy as sa
    from tunegate.server.jobs._monitor import TERMINAL
    from tunegate.server.routing import LOCAL_PROVIDER, STORED_KEY_PREFIX
    from tunegate.server.store import Database

    database = await Database.open(url)
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "jobs" in statement:
            captured.append((statement, parameters))

    engine: Any = database.engine

    async def plan(statement: str, parameters: Any) -> str:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            # the statement as SQLAlchemy sent it to asyncpg ($n placeholders); row locks taken
            # by the claim's FOR UPDATE end with the statement (autocommit)
            rows = await raw.driver_connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *parameters)
        return "\n".join(str(r[0]) for r in rows)

    sa.event.listen(engine.sync_engine, "before_cursor_execute", capture)
    plans = {}
    try:
        await database.polls.claim(
            now_ms=int(time.time() * 1000),
            lease_ms=60_000,
            limit=100,
            holder="explain",
            terminal=TERMINAL,
            followed=(LOCAL_PROVIDER,),
            prefixes=("vk:", STORED_KEY_PREFIX),
            first_after_ms=60_000,
        )
        plans["claim"] = await plan(*captured[0])
        captured.clear()
        await database.jobs.page(lister_owner, limit=21, hidden_states=("failed_to_create",))
        plans["list_first"] = await plan(*captured[0])
        captured.clear()  # the page after the cursor, as `JobLister.list` asks for it
        await database.jobs.page(lister_owner, limit=21, after=deep_id, hidden_states=("failed_to_create",))
        plans["list_deep"] = await plan(*captured[0])
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", capture)
        await database.close()
    return plans


# -- processes -----------------------------------------------------------------------------------


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if "Traceback" in err or "ERROR" in err:
            print(f"--- stderr of {args[:3]}:\n{err[-4000:]}", file=sys.stderr)


def write_config(path: Path, *, url: str, fake_port: int, interval: float, monitor: bool) -> None:
    path.write_text(
        f"""
[server]
database_url = "{url}"
monitor_enabled = {"true" if monitor else "false"}
monitor_min_interval_seconds = {interval}
monitor_max_interval_seconds = {interval}

[providers.openai]
base_url = "http://127.0.0.1:{fake_port}/v1"

[virtual_keys.team]
provider = "openai"
api_key_env = "TG_BENCH_KEY"
""",
        encoding="utf-8",
    )


def tunegate(command: str, config: Path, data_dir: Path, port_args: list[str]) -> list[str]:
    return [
        "taskset",
        "-c",
        "1",
        str(BIN / "tunegate"),
        command,
        "--config",
        str(config),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "WARNING",
        *port_args,
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_listing(port: int, params: dict[str, str], requests: int, warmup: int) -> dict[str, float]:
    import httpx

    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {LIST_TOKEN}"}
    ) as http:
        latencies = []
        for i in range(warmup + requests):
            start = time.perf_counter()
            answer = http.get("/fine_tuning/jobs", params=params)
            elapsed = time.perf_counter() - start
            answer.raise_for_status()
            body = answer.json()
            if len(body["data"]) != int(params["limit"]) or not body["has_more"]:
                raise SystemExit(f"unexpected page: {len(body['data'])} jobs, has_more={body['has_more']}")
            if i >= warmup:
                latencies.append(elapsed * 1000)
    if not latencies:
        return {}
    return {"p50": statistics.median(latencies), "p99": percentile(latencies, 0.99)}


# -- the run -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    fake = sub.add_parser("fake", help="(internal) run the fake provider")
    fake.add_argument("--port", type=int, required=True)
    fake.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--list-rows", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=60.0, help="min = max polling interval, seconds")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds the replicas run")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default interval + 15)")
    parser.add_argument("--list-requests", type=int, default=500)
    parser.add_argument("--profile", help="write a py-spy profile (raw) of replica 0's window here")
    parser.add_argument("--list-only", action="store_true", help="seed, then measure the listing alone")
    parser.add_argument("--profile-list", help="write a py-spy profile (raw) of the listing server here")
    parser.add_argument("--analyze-only", action="store_true", help="ANALYZE the seeded rows, no VACUUM")
    args = parser.parse_args()
    if args.command == "fake":
        run_fake(args.port, args.jobs)
        return
    pin(0)
    warmup = args.warmup if args.warmup is not None else args.interval + 15
    if args.list_only and not args.list_rows:
        raise SystemExit("--list-only needs --list-rows")
    if args.duration <= warmup + 10 and not args.list_only:
        raise SystemExit("--duration must exceed the warm-up by more than 10 s")
    db_name = "tunegate_bench_" + secrets.token_hex(6)
    url = asyncio.run(create_database(db_name))
    try:
        with tempfile.TemporaryDirectory(prefix="tunegate-monitor-bench-") as tmp:
            result = run(args, Path(tmp), db_name, url, warmup)
    finally:
        asyncio.run(drop_database(db_name))
    report(result)


def run(args: argparse.Namespace, tmp: Path, db_name: str, url: str, warmup: float) -> dict[str, Any]:
    seeding = time.time()
    start_at = seeding + 20  # replicas are up by then; jobs fall due from here on
    deep_id = asyncio.run(
        seed(
            db_name,
            jobs=args.jobs,
            list_rows=args.list_rows,
            interval=args.interval,
            due_from=start_at,
            vacuum=not args.analyze_only,
        )
    )
    seeded_in = time.time() - seeding
    print(f"seeded {args.jobs} followed + {args.list_rows} listed jobs in {seeded_in:.1f}s", flush=True)

    fake_port = free_port()
    config = tmp / "tunegate.toml"
    result: dict[str, Any] = {
        "jobs": args.jobs,
        "list_rows": args.list_rows,
        "interval": args.interval,
        "list_only": args.list_only,
        "vacuumed": not args.analyze_only,
    }
    if not args.list_only:
        write_config(config, url=url, fake_port=fake_port, interval=args.interval, monitor=True)
        result.update(monitor(args, tmp, db_name, config, fake_port, start_at, warmup))
        print(json.dumps(result), flush=True)
    if args.list_rows:
        from tunegate.server.owner import owner_from_token

        result["plans"] = asyncio.run(explain(url, owner_from_token(LIST_TOKEN), deep_id))
        # The listing, through one `tunegate run` (monitor off), nothing else running. The
        # provider is never called for the registry's listing (the fake is down by now).
        write_config(config, url=url, fake_port=fake_port, interval=args.interval, monitor=False)
        result.update(listing(args, tmp, config, deep_id))
    return result


def monitor(
    args: argparse.Namespace,
    tmp: Path,
    db_name: str,
    config: Path,
    fake_port: int,
    start_at: float,
    warmup: float,
) -> dict[str, Any]:
    """Steps 2–4: the fake, two replicas, the window; what they measured."""
    import httpx

    fake_cmd = [sys.executable, __file__, "fake", "--port", str(fake_port), "--jobs", str(args.jobs)]
    with started(fake_cmd) as fake_proc:
        wait_port(fake_port, fake_proc)
        with contextlib.ExitStack() as stack:
            replicas = []
            for i, secret in enumerate(REPLICA_SECRETS):
                env = {**os.environ, "TG_BENCH_KEY": secret}
                grpc_port = free_port()
                cmd = tunegate("server", config, tmp / f"replica-{i}", ["--grpc-port", str(grpc_port)])
                proc = stack.enter_context(started(cmd, env))
                replicas.append((proc, grpc_port))
            for proc, grpc_port in replicas:
                wait_port(grpc_port, proc)
            began = time.time()
            print(f"replicas up {began - start_at:+.1f}s from the first due time", flush=True)
            time.sleep(max(0.0, began + warmup - time.time()))
            window_start = time.time()
            cpu0 = [cpu_seconds(proc.pid) for proc, _ in replicas]
            sessions0 = asyncio.run(sessions(db_name))
            if args.profile:  # py-spy on replica 0
                duration = int(began + args.duration - time.time()) - 1
                stack.callback(profiled(replicas[0][0].pid, duration, args.profile).wait)
            load0 = os.getloadavg()
            time.sleep(max(0.0, began + args.duration - time.time()))
            window_end = time.time()
            cpu1 = [cpu_seconds(proc.pid) for proc, _ in replicas]
            sessions1 = asyncio.run(sessions(db_name))
            load1 = os.getloadavg()
            for proc, _ in replicas:
                if proc.poll() is not None:
                    raise SystemExit(f"a replica exited early ({proc.returncode})")
        # replicas stopped here; the fake still runs
        calls = httpx.get(f"http://127.0.0.1:{fake_port}/_bench/stats", timeout=60).json()

    polls = asyncio.run(poll_log(db_name))
    window = window_end - window_start
    in_window = [c for c in calls if window_start <= c[0] < window_end]
    polls_in_window = [p for p in polls if window_start <= p[2] < window_end]
    per_job: dict[str, list[float]] = defaultdict(list)
    for job_id, _, at in polls:
        per_job[job_id].append(at)
    gaps = [b - a for times in per_job.values() for a, b in itertools.pairwise(times)]
    by_caller: dict[str, int] = defaultdict(int)
    for _, _, token in in_window:
        by_caller[token] += 1
    holders = sorted({holder for _, holder, _ in polls_in_window})
    by_holder = {h: len([p for p in polls_in_window if p[1] == h]) for h in holders}
    per_minute: dict[int, int] = defaultdict(int)
    for when, _, _ in calls:
        per_minute[int((when - began) // 60)] += 1
    cpu = [(b - a) / window * 100 for a, b in zip(cpu0, cpu1, strict=True)]
    return {
        "duration": args.duration,
        "warmup": warmup,
        "window_s": round(window, 1),
        "calls_total": len(calls),
        "calls_per_min": round(len(in_window) * 60 / window),
        "list_calls_per_min": round(len([c for c in in_window if c[1] == "list"]) * 60 / window),
        "calls_by_minute": [per_minute[m] for m in sorted(per_minute)],
        "calls_per_replica_per_min": [round(by_caller.get(s, 0) * 60 / window) for s in REPLICA_SECRETS],
        "jobs_polled": len(per_job),
        "polls_per_min_expected": round(args.jobs * 60 / args.interval),
        "polls_per_min_measured": round(len(polls_in_window) * 60 / window),
        "polls_per_replica_per_min": [round(n * 60 / window) for n in by_holder.values()],
        "gap_min_s": round(min(gaps), 2) if gaps else None,
        "gap_p50_s": round(statistics.median(gaps), 2) if gaps else None,
        "gap_max_s": round(max(gaps), 2) if gaps else None,
        "early_polls": len([g for g in gaps if g < 0.9 * args.interval]),
        "duplicates": len([g for g in gaps if g < 0.5 * args.interval]),
        "replica_cpu_pct": [round(c, 2) for c in cpu],
        "cpu_ms_per_poll": round(
            sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) * 1000 / max(1, len(polls_in_window)), 3
        ),
        "pg_sessions_per_min": round((sessions1 - sessions0) * 60 / window),
        "load_avg": [round(x, 2) for x in (*load0, *load1)],
    }


def listing(args: argparse.Namespace, tmp: Path, config: Path, deep_id: str) -> dict[str, Any]:
    """Step 5's timing: the first page and the page after `deep_id`, through `tunegate run`."""
    result: dict[str, Any] = {}
    http_port, grpc_port = free_port(), free_port()
    cmd = tunegate(
        "run", config, tmp / "lister", ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    )
    pages = (("list_first", {"limit": "20"}), ("list_deep", {"limit": "20", "after": deep_id}))
    with started(cmd, {**os.environ, "TG_BENCH_KEY": "sk-bench-a"}) as proc:
        wait_port(http_port, proc)
        load0 = os.getloadavg()
        profiler = None
        for key, params in pages:
            time_listing(http_port, params, 0, 50)  # warm-up, outside the profile
            if args.profile_list and profiler is None:
                profiler = profiled(proc.pid, None, args.profile_list, rate=1000)  # ms-long requests
            before = cpu_seconds(proc.pid)
            result[key] = time_listing(http_port, params, args.list_requests, 0)
            used = cpu_seconds(proc.pid) - before
            result[key]["cpu_ms"] = used * 1000 / args.list_requests  # the gateway's CPU per request
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its profile when interrupted
            profiler.wait()
        result["list_load_avg"] = [round(x, 2) for x in (*load0, *os.getloadavg())]
    return result


def profiled(pid: int, duration: int | None, out: str, rate: int = 100) -> subprocess.Popen[bytes]:
    """py-spy (not a project dependency: `pip install py-spy`) recording `pid` into `out` (raw,
    collapsed stacks), `rate` samples a second, for `duration` seconds or until interrupted."""
    args = [str(BIN / "py-spy"), "record", "--nonblocking", "-p", str(pid), "-f", "raw", "-o", out]
    args += ["-r", str(rate)]
    if duration is not None:
        args += ["-d", str(duration)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches before the requests it should see
    return proc


def report(r: dict[str, Any]) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False
    ).stdout.strip()
    r["commit"] = commit
    r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    with open(out / "monitor.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")

    def both(values: list[Any], fmt: str = "{:.0f}") -> str:
        return " / ".join(fmt.format(v) for v in values)

    print()
    print("| measure | target | measured |")
    print("|---|---|---|")
    if "polls_per_min_measured" in r:  # not with --list-only
        expected, measured = r["polls_per_min_expected"], r["polls_per_min_measured"]
        print(f"| polls/min (steady) | {expected} (the cadence) | {measured} |")
        print(f"| polls/min per replica | — | {both(r['polls_per_replica_per_min'])} |")
        print(
            f"| upstream calls/min (listing pages) | — | {r['calls_per_min']} ({r['list_calls_per_min']}); "
            f"per replica {both(r['calls_per_replica_per_min'])} |"
        )
        print(
            f"| gap between two polls of one job, min / p50 / max (s) | ≥ {0.5 * r['interval']:.0f} | "
            f"{r['gap_min_s']} / {r['gap_p50_s']} / {r['gap_max_s']} |"
        )
        print(f"| duplicate polls (gap < 0.5 × interval) | 0 | {r['duplicates']} |")
        print(f"| early polls (gap < 0.9 × interval: a sweep aligning a job) | — | {r['early_polls']} |")
        cpu = both(r["replica_cpu_pct"], "{:.1f}%")
        print(f"| replica CPU, % of one core (each) | ≤ 5% | {cpu} (sum {sum(r['replica_cpu_pct']):.1f}%) |")
        print(f"| replica CPU per poll, ms (both replicas) | — | {r['cpu_ms_per_poll']} |")
        print(
            f"| PostgreSQL connections opened per minute (both replicas) | — | {r['pg_sessions_per_min']} |"
        )
    for key, name in (("list_first", "first page"), ("list_deep", "page after a job 90% down")):
        if key in r:
            print(
                f"| list `limit=20`, {name}: p50 / p99 ms (gateway CPU per request) | p50 ≤ 5 | "
                f"{r[key]['p50']:.2f} / {r[key]['p99']:.2f} ({r[key]['cpu_ms']:.2f}) |"
            )
    load = f"load average {r['load_avg']} (window), " if "load_avg" in r else "load average "
    print(f"\ncommit {r['commit']}, {r['date']}, {load}{r.get('list_load_avg')} (listing)")
    for name, plan in r.get("plans", {}).items():
        print(f"\nEXPLAIN ANALYZE, {name}:\n{plan}")


if __name__ == "__main__":
    main()
