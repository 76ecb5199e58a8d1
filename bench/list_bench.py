"""CPU of the JSON passes of one provider-named `list_jobs` page, in this process alone: the
shared bench's fake upstream's 20-job page through what the provider adapter,
`JobService._list_provider` and the edge do with it (parse, tag removal, the domain's defaults
and lenient parse into `ListFineTuningJobsResponse`, the edge's rendering and encoding of that
message).

    taskset -c 1 .venv/bin/python bench/list_bench.py

Prints µs per page for each pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from tunegate.openai_json import to_openai
from tunegate.server.jobs._render import job_list
from tunegate.server.providers._openai import without_tag

SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"


def _page(jobs: int) -> bytes:
    sys.path.insert(0, str(SHARED_BENCH))
    import fake_upstream  # type: ignore[import-not-found]  # the shared harness, not a package

    data = [fake_upstream.ft_job(f"ftjob-{i:024d}") for i in range(jobs)]
    return orjson.dumps({"object": "list", "data": data, "has_more": True})


def _time(name: str, work: Callable[[], Any], rounds: int) -> None:
    work()
    start = time.process_time()
    for _ in range(rounds):
        work()
    print(f"{name:<28} {(time.process_time() - start) / rounds * 1e6:7.1f} µs per page")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    page = _page(args.jobs)
    body = orjson.loads(page)
    jobs = [without_tag(job) for job in body["data"]]
    answer = job_list(jobs, has_more=True)
    print(f"page: {len(page)} bytes, {args.jobs} jobs")
    _time("orjson.loads", lambda: orjson.loads(page), args.rounds)
    _time("tag removal", lambda: [without_tag(j) for j in body["data"]], args.rounds)
    _time("domain: defaults + parse", lambda: job_list(jobs, has_more=True), args.rounds)
    _time("edge: render + encode", lambda: orjson.dumps(to_openai(answer)), args.rounds)


if __name__ == "__main__":
    main()
