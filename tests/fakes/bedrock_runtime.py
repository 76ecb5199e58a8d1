"""A fake of Amazon Bedrock Runtime's Converse API that checks what it receives.

Routes (rest-json, as botocore's ``bedrock-runtime`` service model declares them):

- ``POST /model/{modelId}/converse`` → one ``ConverseResponse`` JSON document;
- ``POST /model/{modelId}/converse-stream`` → ``application/vnd.amazon.eventstream``: binary
  event-stream messages (prelude with total and headers length and its CRC32; string headers
  ``:event-type``, ``:content-type``, ``:message-type``; a JSON payload; the message CRC32) —
  ``messageStart``, per content block ``contentBlockStart`` (tool use only) /
  ``contentBlockDelta`` … / ``contentBlockStop``, ``messageStop``, ``metadata``.

Every request is validated against botocore's bundled service model: the JSON body plus the
path's ``modelId`` go through ``botocore.validate.ParamValidator`` with the operation's input
shape (required members, types, lengths, minimums, tagged unions), then the rules Bedrock
enforces beyond the shapes: number maximums (``temperature``/``topP`` ≤ 1), a conversation that
begins with a user turn and alternates roles, no blank text blocks, and an ``Authorization``
header (SigV4 or a bearer API key). A failure is answered like Bedrock — HTTP 400,
``x-amzn-ErrorType: ValidationException``, ``{"message": …}`` — and appended to
``fake.violations``. Every answer the fake sends is checked against the operation's output shape
(each stream event against its event shape) before it leaves.

The answer is scripted by ``fake.script`` (a :class:`ConverseScript`): the reply text (streamed
in ``chunk_size``-character deltas), optional tool uses, the stop reason and token counts;
``error_after`` sends a ``modelStreamErrorException`` event after that many deltas;
``hold_after`` stops after that many deltas until the client closes the connection (then the
call is marked ``cancelled``). ``fake.models``, when set, lists the model ids that exist (others
answer 404 ``ResourceNotFoundException``). Faults of ``tests.fakes._common`` apply
(``fake.inject("429", "/converse")`` → ``ThrottlingException``; ``500`` →
``InternalServerException``; ``503`` → ``ServiceUnavailableException``).

Each call is kept in ``fake.calls`` (:class:`ConverseCall`: operation, ``modelId``, the parsed
body, what was sent, ``completed`` / ``cancelled``). ``fake.url`` is the ``endpoint_url`` for an
aiobotocore client. ``python -m tests.fakes.bedrock_runtime --port N`` serves it alone.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import zlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aiohttp import web
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape
from botocore.session import get_session
from botocore.validate import ParamValidator

from tests.fakes._common import RECORD, ApiError, FakeServer, run_cli

__all__ = [
    "ConverseCall",
    "ConverseScript",
    "FakeBedrockRuntime",
    "ToolUse",
    "encode_event",
    "event_shape",
    "input_shape",
    "main",
    "output_shape",
    "service_model",
]

_EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


@cache
def service_model() -> ServiceModel:
    """botocore's bundled ``bedrock-runtime`` service model (loaded once)."""
    model: ServiceModel = get_session().get_service_model("bedrock-runtime")
    return model


def _operation(name: str) -> OperationModel:
    return service_model().operation_model(name)


def input_shape(operation: str) -> StructureShape:
    """The input shape of ``operation`` (``Converse``, ``ConverseStream``)."""
    shape = _operation(operation).input_shape
    assert shape is not None
    return shape


def output_shape(operation: str) -> StructureShape:
    """The output shape of ``operation``."""
    shape = _operation(operation).output_shape
    assert shape is not None
    return shape


def event_shape(event_type: str) -> Shape:
    """The shape of one ConverseStream event (``contentBlockDelta``, ``throttlingException`` …)."""
    stream = output_shape("ConverseStream").members["stream"]
    assert isinstance(stream, StructureShape)
    return stream.members[event_type]


# ---------------------------------------------------------------------------------------------
# Event-stream encoding


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # name length (1 byte), name, value type 7 (string), value length (2 bytes), value
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message: the prelude (total length, headers
    length, their CRC32), the string headers, ``payload`` and the CRC32 of all that precedes."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + raw_headers + payload
    return message + struct.pack("!I", zlib.crc32(message))


def _event(event_type: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_event(headers, json.dumps(body).encode())


def _exception(exception_type: str, body: dict[str, Any]) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event(headers, json.dumps(body).encode())


# ---------------------------------------------------------------------------------------------
# Script and calls


@dataclass
class ToolUse:
    """A tool call the scripted model makes (after its text)."""

    name: str
    input: dict[str, Any]
    tool_use_id: str = "tooluse_fake0001"


@dataclass
class ConverseScript:
    """What the fake model answers (see the module docstring)."""

    text: str = "Hello from the fake Bedrock model."
    chunk_size: int = 8
    tool_uses: list[ToolUse] = field(default_factory=list)
    stop_reason: str = "end_turn"
    input_tokens: int = 11
    output_tokens: int = 7
    error_after: int | None = None
    hold_after: int | None = None


@dataclass
class ConverseCall:
    """One Converse / ConverseStream request as the fake received it."""

    operation: str
    model_id: str
    body: dict[str, Any]
    events_sent: int = 0
    completed: bool = False
    cancelled: bool = False
    sent: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the answer ended: written whole, or the client closed the connection."""


# ---------------------------------------------------------------------------------------------
# Request checks


def _maximums(value: Any, shape: Shape, where: str, errors: list[str]) -> None:
    """Number maximums and blank text blocks (ParamValidator checks minimums only)."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                _maximums(value[name], member, f"{where}.{name}", errors)
        text = value.get("text")
        if (
            shape.name in ("ContentBlock", "SystemContentBlock")
            and isinstance(text, str)
            and not text.strip()
        ):
            errors.append(f"{where}.text: the text field is blank")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            _maximums(item, shape.member, f"{where}[{i}]", errors)  # type: ignore[attr-defined]
    elif shape.type_name in ("integer", "long", "float", "double") and isinstance(value, int | float):
        maximum = shape.metadata.get("max")
        if maximum is not None and value > maximum:
            errors.append(f"{where}: {value} is above the maximum {maximum}")


def validate_request(operation: str, params: dict[str, Any]) -> None:
    """Raises a 400 ``ValidationException`` violation unless ``params`` (body + ``modelId``) fit
    ``operation``'s input shape and Bedrock's conversation rules."""
    shape = input_shape(operation)
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ApiError(400, report.generate_report(), code="ValidationException", violation=True)
    errors: list[str] = []
    _maximums(params, shape, "input", errors)
    messages = params.get("messages") or []
    if not messages:
        errors.append("input.messages: at least one message is required")
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            errors.append(
                f"input.messages[{i}].role: a conversation must begin with a user turn and alternate "
                f"between user and assistant (expected {expected!r})"
            )
            break
        if not message.get("content"):
            errors.append(f"input.messages[{i}].content: a message needs at least one content block")
    if errors:
        raise ApiError(400, "; ".join(errors), code="ValidationException", violation=True)


def _check_output(shape: Shape, body: dict[str, Any]) -> None:
    report = ParamValidator().validate(body, shape)
    if report.has_errors():
        raise AssertionError(f"the fake's answer does not fit {shape.name}: {report.generate_report()}")


# ---------------------------------------------------------------------------------------------
# The server


class FakeBedrockRuntime(FakeServer):
    """Bedrock Runtime's Converse and ConverseStream (see the module docstring)."""

    request_id_header = "x-amzn-RequestId"

    def __init__(self, *, script: ConverseScript | None = None, models: set[str] | None = None) -> None:
        super().__init__(steps_per_get=0)
        self.script = script or ConverseScript()
        self.models = models
        self.calls: list[ConverseCall] = []

    @property
    def url(self) -> str:
        """The ``endpoint_url`` for a ``bedrock-runtime`` client."""
        return self.host

    def add_routes(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.post("/model/{model_id}/converse", self._converse),
                web.post("/model/{model_id}/converse-stream", self._converse_stream),
            ]
        )

    def render_error(self, request: web.Request, error: ApiError) -> web.Response:
        exception = error.code if error.code and error.code.endswith("Exception") else None
        exception = exception or _EXCEPTIONS.get(error.status, "InternalServerException")
        headers = {**error.headers, "x-amzn-ErrorType": exception}
        return web.json_response({"message": error.message}, status=error.status, headers=headers)

    def advance(self, job_id: str, to: str | None = None, steps: int = 1) -> str:
        raise KeyError("the Bedrock Runtime fake has no jobs")

    def job_count(self) -> int:
        return 0

    # -- handlers ------------------------------------------------------------------------------
    async def _call(self, request: web.Request, operation: str) -> ConverseCall:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith(("AWS4-HMAC-SHA256 ", "Bearer ")):
            raise ApiError(403, "Missing Authentication Token", code="AccessDeniedException", violation=True)
        model_id = request.match_info["model_id"]
        body = request[RECORD].json
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", violation=True)
        call = ConverseCall(operation, model_id, body)
        self.calls.append(call)
        validate_request(operation, {**body, "modelId": model_id})
        if self.models is not None and model_id not in self.models:
            raise ApiError(404, "The provided model identifier is invalid.", code="ResourceNotFoundException")
        return call

    def _pieces(self) -> list[str]:
        text, size = self.script.text, max(1, self.script.chunk_size)
        return [text[i : i + size] for i in range(0, len(text), size)]

    def _usage(self) -> dict[str, int]:
        s = self.script
        return {
            "inputTokens": s.input_tokens,
            "outputTokens": s.output_tokens,
            "totalTokens": s.input_tokens + s.output_tokens,
        }

    async def _converse(self, request: web.Request) -> web.Response:
        call = await self._call(request, "Converse")
        content: list[dict[str, Any]] = [{"text": self.script.text}] if self.script.text else []
        content += [
            {"toolUse": {"toolUseId": t.tool_use_id, "name": t.name, "input": t.input}}
            for t in self.script.tool_uses
        ]
        answer = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self.script.stop_reason,
            "usage": self._usage(),
            "metrics": {"latencyMs": 12},
        }
        response = self.emit(request, answer, lambda b: _check_output(output_shape("Converse"), b))
        call.completed = True
        return response

    def _stream_events(self) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
        index = 0
        if self.script.text:
            for piece in self._pieces():
                events.append(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
            events.append(("contentBlockStop", {"contentBlockIndex": 0}))
            index = 1
        for offset, tool in enumerate(self.script.tool_uses, start=index):
            start = {"toolUse": {"toolUseId": tool.tool_use_id, "name": tool.name}}
            arguments = json.dumps(tool.input)
            half = len(arguments) // 2
            events.append(("contentBlockStart", {"contentBlockIndex": offset, "start": start}))
            for part in (arguments[:half], arguments[half:]):
                delta = {"toolUse": {"input": part}}
                events.append(("contentBlockDelta", {"contentBlockIndex": offset, "delta": delta}))
            events.append(("contentBlockStop", {"contentBlockIndex": offset}))
        events.append(("messageStop", {"stopReason": self.script.stop_reason}))
        events.append(("metadata", {"usage": self._usage(), "metrics": {"latencyMs": 12}}))
        return events

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        call = await self._call(request, "ConverseStream")
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/vnd.amazon.eventstream"}
        )
        await response.prepare(request)
        script = self.script
        deltas = 0
        try:
            for event_type, body in self._stream_events():
                if event_type == "contentBlockDelta":
                    if script.error_after is not None and deltas == script.error_after:
                        error = {"message": "The model stopped (injected).", "originalStatusCode": 500}
                        _check_output(event_shape("modelStreamErrorException"), error)
                        await self._write(response, call, _exception("modelStreamErrorException", error))
                        return response
                    if script.hold_after is not None and deltas == script.hold_after:
                        call.cancelled = await self.hold(request)
                        return response
                    deltas += 1
                _check_output(event_shape(event_type), body)
                await self._write(response, call, _event(event_type, body))
            await response.write_eof()
            call.completed = True
        except ConnectionResetError:
            call.cancelled = True
        finally:
            call.closed.set()
        return response

    async def _write(self, response: web.StreamResponse, call: ConverseCall, frame: bytes) -> None:
        await response.write(frame)
        call.sent += frame
        call.events_sent += 1


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeBedrockRuntime, lambda fake: fake.host, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
