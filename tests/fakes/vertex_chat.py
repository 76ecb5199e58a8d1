"""A fake Vertex AI prediction API for chat with a tuned Gemini model: ``generateContent`` and
``streamGenerateContent`` on an endpoint, checked against Vertex's own discovery document.

Routes (``{e}`` an endpoint id; the project and location are any):

- ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:generateContent`` → one
  ``GenerateContentResponse``;
- ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:streamGenerateContent?alt=sse`` →
  ``text/event-stream``, each event ``data: {GenerateContentResponse}\\r\\n\\r\\n`` (Google's
  line ends). Without ``alt=sse`` Vertex streams a JSON array instead; the gateway never asks
  for that, so the fake refuses it as a violation.

Every request needs ``Authorization: Bearer …`` (else 401 ``UNAUTHENTICATED``, a violation) and
a body that fits ``GoogleCloudAiplatformV1GenerateContentRequest`` of ``aiplatform.v1.json``
(``tests/oracles``; strictly: unknown keys, output-only fields and missing ``Required.`` fields
are refused) and Vertex's rules that the schema does not carry (roles ``user`` / ``model``; a
part holds exactly one kind of data; no empty text; the conversation ends with a user turn;
function responses answer the function calls of the turn before them, one for one, by name;
``generationConfig`` ranges; function names; ``allowedFunctionNames`` only with ``ANY`` and
naming declared functions; ``responseJsonSchema`` only with ``application/json``). A request
that breaks them is answered 400 ``INVALID_ARGUMENT`` and recorded in ``fake.violations``.
Every answer and stream event is checked against ``GoogleCloudAiplatformV1GenerateContentResponse``
before it is sent. Errors are Google's ``{"error": {"code", "message", "status"}}``; an
endpoint outside ``endpoints`` (when given) is 404 ``NOT_FOUND``; the common faults
(``fake.inject("429", ":generateContent")`` …) answer in that shape too, 429 with
``Retry-After``.

``fake.script`` (:class:`GeminiScript`) says what the model answers: its text (split into
``chunk_size`` pieces, one stream event each), the function calls it makes after the text, the
``finishReason``, token counts, ``candidateCount`` copies of it as the request asks, a blocked
prompt (``block_reason``), and for streams a failure after ``error_after`` text events
(``error_kind`` ``"event"``: an ``{"error": …}`` event, then the end; ``"disconnect"``: the
connection dropped) or a pause after ``hold_after`` text events until the client goes away.

Each call is kept in ``fake.calls`` (:class:`GeminiCall`: method, endpoint resource name, the
parsed body, what was sent, ``completed`` / ``cancelled``). ``python -m tests.fakes.vertex_chat
--port N`` serves it alone.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.fakes._common import RECORD, ApiError, FakeServer, new_id, run_cli
from tests.fakes._discovery_schema import validate

__all__ = [
    "REQUEST_SCHEMA",
    "RESPONSE_SCHEMA",
    "FakeVertexChat",
    "FunctionCall",
    "GeminiCall",
    "GeminiScript",
    "main",
    "request_errors",
    "response_errors",
]

REQUEST_SCHEMA = "GoogleCloudAiplatformV1GenerateContentRequest"
RESPONSE_SCHEMA = "GoogleCloudAiplatformV1GenerateContentResponse"

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
_ENDPOINT = r"/v1/projects/{project}/locations/{location}/endpoints/{endpoint:[^/:]+}"


@dataclass
class FunctionCall:
    """A function call the scripted model makes (after its text); ``id`` as Vertex may send it."""

    name: str
    args: dict[str, Any]
    id: str | None = None


@dataclass
class GeminiScript:
    """What the fake model answers (see the module docstring)."""

    text: str = "Hello from the fake tuned Gemini model."
    chunk_size: int = 8
    function_calls: list[FunctionCall] = field(default_factory=list)
    finish_reason: str = "STOP"
    prompt_tokens: int = 11
    candidates_tokens: int = 7
    thoughts_tokens: int = 0
    block_reason: str | None = None
    error_after: int | None = None
    error_kind: Literal["event", "disconnect"] = "event"
    hold_after: int | None = None


@dataclass
class GeminiCall:
    """One ``generateContent`` / ``streamGenerateContent`` request as the fake received it."""

    method: str
    resource: str
    body: dict[str, Any]
    events_sent: int = 0
    completed: bool = False
    cancelled: bool = False
    sent: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the answer ended: written whole, or the client closed the connection."""


# ---------------------------------------------------------------------------------------------
# Checks


def request_errors(body: Any) -> list[str]:
    """Every way ``body`` breaks the request schema or Vertex's rules (empty when it fits)."""
    errors = validate(body, REQUEST_SCHEMA, direction="request")
    if errors or not isinstance(body, dict):
        return errors
    contents = body.get("contents") or []
    if not contents:
        errors.append("$.contents: at least one content is required")
    previous_calls: list[str] = []
    for i, content in enumerate(contents):
        where = f"$.contents[{i}]"
        role = content.get("role")
        if role not in ("user", "model"):
            errors.append(f"{where}.role: must be 'user' or 'model', not {role!r}")
        parts = content.get("parts") or []
        if not parts:
            errors.append(f"{where}.parts: a content needs at least one part")
        errors.extend(_part_errors(parts, where))
        responses = [p["functionResponse"].get("name") for p in parts if "functionResponse" in p]
        if responses and (role != "user" or sorted(responses) != sorted(previous_calls)):
            errors.append(
                f"{where}: function responses {responses} must answer, one for one, the function calls "
                f"{previous_calls} of the model turn just before"
            )
        previous_calls = [p["functionCall"].get("name") for p in parts if "functionCall" in p]
        if previous_calls and role != "model":
            errors.append(f"{where}: function calls come from the model")
    if contents and contents[-1].get("role") != "user":
        errors.append("$.contents: a conversation must end with a user turn or a function response")
    system = body.get("systemInstruction")
    if system is not None:
        for j, part in enumerate(system.get("parts") or []):
            if set(part) != {"text"}:
                errors.append(f"$.systemInstruction.parts[{j}]: only text can be a system instruction")
        errors.extend(_part_errors(system.get("parts") or [], "$.systemInstruction"))
    errors.extend(_config_errors(body.get("generationConfig") or {}))
    errors.extend(_tool_errors(body.get("tools") or [], body.get("toolConfig")))
    return errors


def _part_errors(parts: list[dict[str, Any]], where: str) -> list[str]:
    errors = []
    for j, part in enumerate(parts):
        kinds = [name for name in _DATA_FIELDS if name in part]
        if len(kinds) != 1:
            errors.append(f"{where}.parts[{j}]: a part holds exactly one kind of data, not {kinds}")
        if "text" in part and not part["text"]:
            errors.append(f"{where}.parts[{j}].text: the text is empty")
    return errors


def _config_errors(config: dict[str, Any]) -> list[str]:
    errors = []
    for key, low, high in (
        ("temperature", 0, 2),
        ("topP", 0, 1),
        ("candidateCount", 1, 8),
        ("presencePenalty", -2, 2),
        ("frequencyPenalty", -2, 2),
        ("maxOutputTokens", 1, 2**31 - 1),
    ):
        value = config.get(key)
        if value is not None and not low <= value <= high:
            errors.append(f"$.generationConfig.{key}: {value} is out of the range [{low}, {high}]")
    if len(config.get("stopSequences") or []) > 5:
        errors.append("$.generationConfig.stopSequences: at most 5 stop sequences")
    if "responseJsonSchema" in config:
        if config.get("responseMimeType") != "application/json":
            errors.append("$.generationConfig.responseJsonSchema needs responseMimeType 'application/json'")
        if "responseSchema" in config:
            errors.append("$.generationConfig: responseSchema and responseJsonSchema exclude each other")
    return errors


def _tool_errors(tools: list[dict[str, Any]], tool_config: dict[str, Any] | None) -> list[str]:
    errors = []
    names: list[str] = []
    for i, tool in enumerate(tools):
        for k, declaration in enumerate(tool.get("functionDeclarations") or []):
            where = f"$.tools[{i}].functionDeclarations[{k}]"
            name = declaration.get("name", "")
            names.append(name)
            if not _FUNCTION_NAME.fullmatch(name):
                errors.append(f"{where}.name: {name!r} is not a valid function name")
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                errors.append(f"{where}: parameters and parametersJsonSchema exclude each other")
    calling = (tool_config or {}).get("functionCallingConfig") or {}
    allowed = calling.get("allowedFunctionNames")
    if allowed is not None:
        if calling.get("mode") != "ANY":
            errors.append("$.toolConfig.functionCallingConfig.allowedFunctionNames: only with mode ANY")
        for name in allowed:
            if name not in names:
                errors.append(
                    f"$.toolConfig.functionCallingConfig.allowedFunctionNames: no function {name!r}"
                )
    return errors


def response_errors(body: Any) -> list[str]:
    """Every way ``body`` breaks the ``GenerateContentResponse`` schema."""
    return validate(body, RESPONSE_SCHEMA, direction="response")


def _check_response(body: Any) -> None:
    errors = response_errors(body)
    if errors:
        raise AssertionError("the fake's answer does not fit GenerateContentResponse: " + "; ".join(errors))


# ---------------------------------------------------------------------------------------------
# The server


class FakeVertexChat(FakeServer):
    """Vertex AI's ``generateContent`` / ``streamGenerateContent`` (see the module docstring)."""

    request_id_header = "x-request-id"

    def __init__(self, *, script: GeminiScript | None = None, endpoints: set[str] | None = None) -> None:
        super().__init__(steps_per_get=0)
        self.script = script or GeminiScript()
        self.endpoints = endpoints
        """Endpoint ids that exist (None: every one)."""
        self.calls: list[GeminiCall] = []

    @property
    def url(self) -> str:
        """The base URL (what ``https://{region}-aiplatform.googleapis.com`` is to Vertex)."""
        return self.host

    def add_routes(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.post(_ENDPOINT + ":generateContent", self._generate),
                web.post(_ENDPOINT + ":streamGenerateContent", self._stream),
            ]
        )

    def render_error(self, request: web.Request, error: ApiError) -> web.Response:
        status = _STATUS.get(error.status, "UNKNOWN")
        body = {"error": {"code": error.status, "message": error.message, "status": status}}
        return web.json_response(body, status=error.status, headers=error.headers)

    def advance(self, job_id: str, to: str | None = None, steps: int = 1) -> str:
        raise KeyError("the Vertex chat fake has no jobs")

    def job_count(self) -> int:
        return 0

    # -- handlers ------------------------------------------------------------------------------
    def _call(self, request: web.Request, method: str) -> GeminiCall:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            raise ApiError(
                401,
                "Request is missing required authentication credential. Expected OAuth 2 access token.",
                violation=True,
            )
        info = request.match_info
        resource = f"projects/{info['project']}/locations/{info['location']}/endpoints/{info['endpoint']}"
        body = request[RECORD].json
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", violation=True)
        call = GeminiCall(method, resource, body)
        self.calls.append(call)
        errors = request_errors(body)
        if errors:
            raise ApiError(400, "Invalid request: " + "; ".join(errors), violation=True)
        if self.endpoints is not None and info["endpoint"] not in self.endpoints:
            raise ApiError(404, f"Endpoint `{resource}` not found.")
        return call

    def _candidate_count(self, call: GeminiCall) -> int:
        count = (call.body.get("generationConfig") or {}).get("candidateCount", 1)
        return int(count)

    def _usage(self) -> dict[str, Any]:
        s = self.script
        usage: dict[str, Any] = {
            "promptTokenCount": s.prompt_tokens,
            "candidatesTokenCount": s.candidates_tokens,
            "totalTokenCount": s.prompt_tokens + s.candidates_tokens + s.thoughts_tokens,
            "trafficType": "ON_DEMAND",
        }
        if s.thoughts_tokens:
            usage["thoughtsTokenCount"] = s.thoughts_tokens
        return usage

    def _envelope(self, candidates: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
            "createTime": "2026-12-04T12:00:00.123456Z",
            "responseId": new_id("resp"),
        }

    def _blocked(self) -> dict[str, Any]:
        usage = {"promptTokenCount": self.script.prompt_tokens, "totalTokenCount": self.script.prompt_tokens}
        return {
            "promptFeedback": {"blockReason": self.script.block_reason, "blockReasonMessage": "Blocked."},
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
        }

    def _calls(self) -> list[dict[str, Any]]:
        calls = []
        for c in self.script.function_calls:
            call: dict[str, Any] = {"name": c.name, "args": c.args}
            if c.id is not None:
                call["id"] = c.id
            calls.append({"functionCall": call})
        return calls

    async def _generate(self, request: web.Request) -> web.Response:
        call = self._call(request, "generateContent")
        if self.script.block_reason:
            answer = self._blocked()
        else:
            parts: list[dict[str, Any]] = [{"text": self.script.text}] if self.script.text else []
            parts += self._calls()
            candidates = [
                {
                    "index": i,
                    "content": {"role": "model", "parts": parts},
                    "finishReason": self.script.finish_reason,
                    "avgLogprobs": -0.25,
                }
                for i in range(self._candidate_count(call))
            ]
            answer = self._envelope(candidates, self._usage())
        response = self.emit(request, answer, _check_response)
        call.completed = True
        return response

    def _pieces(self) -> list[str]:
        text, size = self.script.text, max(1, self.script.chunk_size)
        return [text[i : i + size] for i in range(0, len(text), size)]

    def _stream_events(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        """(kind, event): kind ``text`` for a text event (what ``error_after`` / ``hold_after``
        count), else ``other``."""
        if self.script.block_reason:
            return [("other", self._blocked())]
        prompt_only = {"promptTokenCount": self.script.prompt_tokens}

        def each(parts: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
            return (
                [{"index": i, "content": {"role": "model", "parts": parts}, **extra} for i in range(count)]
                if count > 1
                else [{"content": {"role": "model", "parts": parts}, **extra}]
            )

        events: list[tuple[str, dict[str, Any]]] = [
            ("text", self._envelope(each([{"text": piece}]), prompt_only)) for piece in self._pieces()
        ]
        if self.script.function_calls:
            events.append(("other", self._envelope(each(self._calls()), prompt_only)))
        last = each([{"text": ""}], finishReason=self.script.finish_reason)
        events.append(("other", self._envelope(last, self._usage())))
        return events

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("alt") != "sse":
            raise ApiError(400, "streamGenerateContent without alt=sse answers a JSON array", violation=True)
        call = self._call(request, "streamGenerateContent")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        script = self.script
        texts = 0
        try:
            for kind, event in self._stream_events(self._candidate_count(call)):
                if kind == "text":
                    if script.error_after is not None and texts == script.error_after:
                        await self._fail(request, response, call)
                        return response
                    if script.hold_after is not None and texts == script.hold_after:
                        call.cancelled = await self.hold(request)
                        return response
                    texts += 1
                _check_response(event)
                await self._write(response, call, event)
            await response.write_eof()
            call.completed = True
        except ConnectionResetError:
            call.cancelled = True
        finally:
            call.closed.set()
        return response

    async def _fail(self, request: web.Request, response: web.StreamResponse, call: GeminiCall) -> None:
        if self.script.error_kind == "disconnect":
            if request.transport is not None:
                request.transport.abort()
            return
        error = {"code": 500, "message": "Internal error encountered (injected).", "status": "INTERNAL"}
        await self._write(response, call, {"error": error})
        await response.write_eof()

    async def _write(self, response: web.StreamResponse, call: GeminiCall, event: dict[str, Any]) -> None:
        frame = b"data: " + json.dumps(event).encode() + b"\r\n\r\n"
        await response.write(frame)
        call.sent += frame
        call.events_sent += 1


def main(argv: list[str] | None = None) -> None:
    run_cli(FakeVertexChat, lambda fake: fake.host, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
