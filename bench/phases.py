"""Where a request's wall time goes inside `tunegate run`: wraps the main steps of a job
creation with timestamps and, at exit, prints the median time between consecutive steps.

    taskset -c 1 .venv/bin/python bench/phases.py .venv/bin/tunegate run --config … --http-port 8790
    # load it (e.g. `wrk -c1` on create_job), stop it with SIGTERM; the table goes to stderr

Each request is the run of marks from its bytes' arrival (`0 arrive`) to its answer's write
(`9 written`); work that runs between two requests (a completion stored after its answer) shows
as `NEXT …` gaps. The first fifth of the requests is dropped (warm-up). Each mark costs ~1 µs,
so the total is a little above an unwrapped run's.
"""

from __future__ import annotations

import atexit
import collections
import functools
import itertools
import runpy
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import tunegate.edge._app as app
import tunegate.edge._protocol as protocol
import tunegate.server.jobs._create as create
import tunegate.server.jobs._service as service
import tunegate.server.routing._router as router
import tunegate.server.servicers._fine_tuning as servicer
import tunegate.server.store._jobs as jobs

_now = time.perf_counter_ns
_marks: list[tuple[str, int]] = []


def _mark(name: str) -> None:
    _marks.append((name, _now()))


def _timed_async(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        _mark(f"{label} start")
        try:
            return await original(*args, **kwargs)
        finally:
            _mark(f"{label} end")

    setattr(owner, name, timed)


def _timed_sync(owner: Any, name: str, label: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        _mark(f"{label} start")
        try:
            return original(*args, **kwargs)
        finally:
            _mark(f"{label} end")

    setattr(owner, name, timed)


def _install() -> None:
    _timed_sync(protocol.EdgeConnection, "data_received", "0 arrive")
    _timed_async(protocol.EdgeConnection, "finish_response", "9 answer")
    _timed_async(app.EdgeHandler, "_serve", "1 edge")
    _timed_sync(app, "build_message", "1a message")
    _timed_async(servicer.FineTuningServicer, "CreateFineTuningJob", "1b servicer")
    _timed_async(service.JobService, "create", "1c service")
    _timed_sync(router.Router, "resolve", "1c route")
    _timed_async(create.JobCreator, "create", "1d creator")
    _timed_async(jobs.JobRepository, "insert_intent", "2 intent")
    _timed_async(httpx.AsyncClient, "send", "3 provider")
    _timed_async(jobs.JobRepository, "complete", "4 complete")


def _report() -> None:
    requests: list[list[tuple[str, int]]] = []
    for name, at in _marks:
        if name == "0 arrive start":
            requests.append([])
        if requests:
            requests[-1].append((name, at))
    requests = requests[len(requests) // 5 :]
    gaps: dict[str, list[int]] = collections.defaultdict(list)
    for marks in requests:
        for (first, t1), (second, t2) in itertools.pairwise(marks):
            gaps[f"{first} -> {second}"].append(t2 - t1)
        answered = [at for name, at in marks if name == "9 answer end"]
        if answered:
            gaps["TOTAL (arrival to the answer written)"].append(answered[-1] - marks[0][1])
    for before, after in itertools.pairwise(requests):
        gaps[f"NEXT {before[-1][0]} -> {after[0][0]}"].append(after[0][1] - before[-1][1])
    print(f"{len(requests)} requests; median µs between consecutive marks", file=sys.stderr)
    for name, values in gaps.items():  # in the order of a request
        if len(values) * 10 < len(requests):
            continue  # a rare path
        values.sort()
        print(f"{name:52s} n={len(values):6d} p50={values[len(values) // 2] / 1000:8.1f}", file=sys.stderr)


if __name__ == "__main__":
    _install()
    atexit.register(_report)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
