"""The sans-IO half of `tunegate.edge._sse`: the query's `stream` parameter and how a stream's
messages are written as server-sent events."""

from __future__ import annotations

import json

import pytest
from google.api import httpbody_pb2
from multidict import MultiDict
from tunegate.edge._http import ErrorAnswer
from tunegate.edge._sse import DONE, event_bytes, stream_asked
from tunegate.openai_json import to_openai
from tunegate.v1 import fine_tuning_pb2 as ft


@pytest.mark.parametrize(
    ("query", "asked"),
    [
        ([], False),
        ([("limit", "5")], False),
        ([("stream", "true")], True),
        ([("stream", "TRUE")], True),
        ([("stream", "1")], True),
        ([("stream", "false")], False),
        ([("stream", "0")], False),
        ([("stream", "true"), ("stream", "false")], False),  # the last one counts
        ([("stream", "false"), ("stream", "true")], True),
    ],
)
def test_the_query_asks_for_a_stream(query: list[tuple[str, str]], asked: bool) -> None:
    assert stream_asked(MultiDict(query)) is asked


@pytest.mark.parametrize("value", ["", "yes", "2", "truee"])
def test_another_stream_value_is_a_400_naming_stream(value: str) -> None:
    with pytest.raises(ErrorAnswer) as raised:
        stream_asked(MultiDict([("stream", value)]))
    error = raised.value.error
    assert error.status == 400
    assert error.body["error"]["param"] == "stream" and error.body["error"]["code"] == "invalid_value"


def _data(event: bytes) -> object:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n") == 2
    return json.loads(event[len(b"data: ") : -2])


def test_a_union_renders_as_the_member_that_is_set() -> None:
    job = ft.FineTuningJob(id="ftjob-1", created_at=5, model="m", status=ft.JOB_STATUS_RUNNING, seed=3)
    event = ft.FineTuningJobEvent(id="ftevent-1", created_at=6, level=ft.EVENT_LEVEL_INFO, message="hi")
    rendered_job = _data(event_bytes(ft.FineTuningJobUpdate(job=job)))
    rendered_event = _data(event_bytes(ft.FineTuningJobUpdate(event=event)))
    assert rendered_job == to_openai(job)  # exactly as the unary route renders it
    assert rendered_event == to_openai(event)
    assert isinstance(rendered_job, dict) and rendered_job["object"] == "fine_tuning.job"
    assert rendered_job["status"] == "running" and rendered_job["fine_tuned_model"] is None
    assert isinstance(rendered_event, dict) and rendered_event["object"] == "fine_tuning.job.event"
    assert event_bytes(ft.FineTuningJobUpdate()) == b""  # nothing set: nothing to say


def test_other_messages_render_whole_and_http_bodies_pass_as_they_are() -> None:
    event = ft.FineTuningJobEvent(id="ftevent-2", message="x")
    assert _data(event_bytes(event)) == to_openai(event)
    raw = b'data: {"id":"chatcmpl-1"}\n\n'
    assert event_bytes(httpbody_pb2.HttpBody(content_type="text/event-stream", data=raw)) == raw
    assert DONE == b"data: [DONE]\n\n"
