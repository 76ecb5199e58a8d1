"""Provider JSON and registry records as the contract's messages (`tunegate.server.jobs._render`)."""

from __future__ import annotations

from typing import Any

from tunegate.openai_json import to_openai
from tunegate.server.jobs._render import (
    checkpoint_list,
    event_list,
    foreign_job,
    job_list,
    job_message,
    with_provider_job,
)
from tunegate.server.store import INTENT, JobRecord
from tunegate.v1 import fine_tuning_pb2 as ft

GATEWAY_FILE = "file-" + "f" * 24
PROVIDER_JOB: dict[str, Any] = {
    "object": "fine_tuning.job",
    "id": "ftjob-native",
    "created_at": 1700000000,
    "model": "gpt-4o-mini",
    "status": "pending",
    "training_file": "file-native-copy",
    "metadata": {"tunegate_job": "ftjob-gateway", "a": "b"},
    "error": {"code": None, "message": None, "param": None},
    "usage_metrics": {"tokens": 12},  # a key the contract does not have
}


def record(**fields: Any) -> JobRecord:
    values: dict[str, Any] = {
        "id": "ftjob-gateway",
        "owner": "alice",
        "provider": "openai",
        "account_key": "openai:alice",
        "state": INTENT,
        "status": "validating_files",
        "request": {"model": "gpt-4o-mini", "training_file": GATEWAY_FILE, "metadata": {"a": "b"}},
        "request_hash": "h",
        "created_at": 1699999999,
        "updated_at": 1699999999,
        "metadata": {"a": "b"},
        **fields,
    }
    return JobRecord(**values)


def test_a_provider_job_is_shown_under_gateway_ids_with_a_normalized_status() -> None:
    updated = with_provider_job(record(), PROVIDER_JOB)
    assert updated.status == "queued" and updated.snapshot is not None
    assert updated.snapshot["usage_metrics"] == {"tokens": 12}  # the registry keeps what it was told
    job = job_message(updated)
    assert (job.id, job.training_file, dict(job.metadata.values)) == (
        "ftjob-gateway",
        GATEWAY_FILE,
        {"a": "b"},
    )
    assert job.status == ft.JOB_STATUS_QUEUED
    assert not job.HasField("error")  # an all-null error is no error
    assert to_openai(job)["created_at"] == 1700000000


def test_an_unconfirmed_job_is_shown_from_its_request() -> None:
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    request = {"model": "gpt-4o-mini", "training_file": GATEWAY_FILE, "method": method, "suffix": "s"}
    job = job_message(record(request=request, metadata=None))
    assert (job.id, job.status, job.created_at) == (
        "ftjob-gateway",
        ft.JOB_STATUS_VALIDATING_FILES,
        1699999999,
    )
    assert job.hyperparameters.n_epochs.value == 2 and job.user_provided_suffix == "s"
    assert not job.HasField("metadata")
    failed = job_message(
        record(status="failed", error={"code": "creation_not_confirmed", "message": "gone"}, updated_at=5)
    )
    assert (failed.status, failed.error.code, failed.finished_at) == (
        ft.JOB_STATUS_FAILED,
        "creation_not_confirmed",
        5,
    )


def test_a_page_keeps_its_order_across_registry_and_provider_jobs() -> None:
    known = with_provider_job(record(), PROVIDER_JOB)
    foreign = {**PROVIDER_JOB, "id": "ftjob-elsewhere", "status": "canceled", "metadata": None}
    page = job_list([foreign, known, record(id="ftjob-intent")], has_more=True)
    assert [job.id for job in page.data] == ["ftjob-elsewhere", "ftjob-gateway", "ftjob-intent"]
    assert [job.status for job in page.data] == [
        ft.JOB_STATUS_CANCELLED,
        ft.JOB_STATUS_QUEUED,
        ft.JOB_STATUS_VALIDATING_FILES,
    ]
    assert page.has_more
    assert page.data[0] == foreign_job(foreign)


def test_a_registry_job_names_its_provider_and_a_foreign_one_does_not() -> None:
    """`provider` is the gateway's own field: the registry's record says which provider holds
    the job, whatever the provider's JSON carries; a job made elsewhere has none."""
    confirmed = with_provider_job(record(provider="azure-openai"), {**PROVIDER_JOB, "provider": "x"})
    assert to_openai(job_message(confirmed))["provider"] == "azure-openai"
    assert to_openai(job_message(record(provider="local")))["provider"] == "local"
    page = job_list([PROVIDER_JOB, confirmed], has_more=False)
    assert [job.provider if job.HasField("provider") else None for job in page.data] == [None, "azure-openai"]


def test_events_and_checkpoints_are_shown_under_the_ids_given() -> None:
    events = event_list([("ftevent-1", {"id": "native", "level": "warning", "message": "m"})], has_more=False)
    assert [(e.id, e.level, e.message) for e in events.data] == [("ftevent-1", ft.EVENT_LEVEL_WARN, "m")]
    body = {"id": "native", "step_number": 3, "metrics": {"train_loss": 0.5}}
    page = checkpoint_list([("ftckpt_2", body), ("ftckpt_1", body)], job_id="ftjob-gateway", has_more=True)
    assert (page.first_id, page.last_id, page.has_more) == ("ftckpt_2", "ftckpt_1", True)
    assert {c.fine_tuning_job_id for c in page.data} == {"ftjob-gateway"}
    assert page.data[0].metrics.train_loss == 0.5
    empty = checkpoint_list([], job_id="ftjob-gateway", has_more=False)
    assert not empty.HasField("first_id") and not empty.HasField("last_id")
