"""Queue names from a job's needs and a worker's capabilities: a job's queue is one every
fitting worker listens to, and no worker that lacks the device or the memory."""

from __future__ import annotations

import pytest
from tunegate.server.providers.local._dispatch import Needs
from tunegate.server.workers import Capabilities, light_queues, train_queue, train_queues


@pytest.mark.parametrize(
    ("needs", "queue"),
    [
        (Needs(), "local-cpu-2g"),
        (Needs(device="any", memory_mb=2048), "local-cpu-2g"),
        (Needs(device="cpu", memory_mb=2049), "local-cpu-4g"),
        (Needs(device="cuda", memory_mb=24_000), "local-cuda-32g"),
    ],
)
def test_a_job_queue_is_its_device_and_memory_tier(needs: Needs, queue: str) -> None:
    assert train_queue(needs) == queue


def test_a_worker_serves_the_tiers_its_memory_holds() -> None:
    assert train_queues(Capabilities("cpu", 9000)) == ["local-cpu-2g", "local-cpu-4g", "local-cpu-8g"]
    assert train_queues(Capabilities("cpu", 1000)) == ["local-cpu-2g"]
    assert train_queues(Capabilities("cuda", 4096)) == [
        "local-cpu-2g",
        "local-cpu-4g",
        "local-cuda-2g",
        "local-cuda-4g",
    ]
    assert "local-validate" in light_queues()


@pytest.mark.parametrize(
    ("needs", "serving"),
    [
        # A 3000 MiB job waits in the 4 GiB tier: a 3000 MiB worker does not hold that tier.
        (Needs("cpu", 3000), {("cpu", 4096), ("cpu", 100_000), ("cuda", 4096), ("cuda", 100_000)}),
        (Needs("cuda", 3000), {("cuda", 4096), ("cuda", 100_000)}),
        # The smallest tier is served by every worker, however small.
        (Needs("any", 100), {(d, m) for d in ("cpu", "cuda") for m in (1024, 3000, 4096, 100_000)}),
    ],
)
def test_exactly_the_fitting_workers_serve_a_job(needs: Needs, serving: set[tuple[str, int]]) -> None:
    queue = train_queue(needs)
    workers = {(d, m) for d in ("cpu", "cuda") for m in (1024, 3000, 4096, 100_000)}
    assert {(d, m) for d, m in workers if queue in train_queues(Capabilities(d, m))} == serving  # type: ignore[arg-type]


def test_a_job_beyond_every_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the largest worker tier"):
        train_queue(Needs(memory_mb=2 * 1024 * 1024))
