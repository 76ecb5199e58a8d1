"""Chat completions for the models the gateway serves itself: `ft:` models of succeeded local
jobs, each answering only its own owner, and the local base model (`tunegate-tiny`), which
answers anyone — so a tuned model can be compared with the model it started from.

Theory of operation. `ChatService.create(owner, body)` (the parsed JSON request document)
checks the request (OpenAI's rules for the fields the local models honour: `n` must be 1, `stop`
at most 4 strings, …), finds the model (`LocalProvider.base_model_dir`, else
`LocalProvider.model_dir`) and, for a tuned model, checks through the job registry that the
caller owns the job that made it — anything else is 404 `model_not_found`, the
same answer as for a model that does not exist, worded as the gateway's own answer (it names the
header that routes a call to a provider's models instead). Models are loaded once (in a thread)
and kept in a small LRU cache. Generation runs in a thread pool, never on the event loop; its
text pieces cross to the loop through a queue, so a stream is written as it is generated, and a
client that goes away stops the generation at the next piece.

The answer is a `ChatReply` (the providers' shape): a content type and an async iterator of
byte chunks — one `chat.completion` JSON document, or server-sent events
(`data: <chat.completion.chunk>`: the role first, then content deltas, then `finish_reason`,
then usage when asked for, then `data: [DONE]`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tunegate.server.errors import InvalidArgument, gateway_model_not_found
from tunegate.server.files import Clock
from tunegate.server.providers.interface import ChatReply

__all__ = ["ChatService", "ModelSource", "OwnershipCheck"]

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096
SYSTEM_FINGERPRINT = "fp_tunegate_local"
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class ModelSource(Protocol):
    """What the chat service needs of `LocalProvider`."""

    name: str

    async def base_model_dir(self, model: str) -> Path | None: ...

    async def model_dir(self, fine_tuned_model: str) -> tuple[str, Path] | None: ...


class OwnershipCheck(Protocol):
    """What the chat service needs of `JobService`."""

    async def owned_native_job(self, owner: str, provider: str, native_id: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _Params:
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool


def _invalid(message: str, param: str) -> InvalidArgument:
    return InvalidArgument(message, code="invalid_value", param=param)


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "input_text"):
                raise _invalid("Only text content parts are supported by local models.", where)
            parts.append(str(part.get("text") or ""))
        return "".join(parts)
    raise _invalid("content must be a string or an array of content parts.", where)


def _number(value: Any, default: float, param: str) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{param} must be a number.", param)
    return float(value)


def check_request(body: Mapping[str, Any]) -> _Params:
    """The request's parameters, or `InvalidArgument` naming the offending field."""
    model = body.get("model")
    if not model or not isinstance(model, str):
        raise InvalidArgument(
            "Missing required parameter: 'model'.", code="missing_required_parameter", param="model"
        )
    raw_messages = body.get("messages")
    if not raw_messages or not isinstance(raw_messages, list):
        raise InvalidArgument(
            "Missing required parameter: 'messages'.", code="missing_required_parameter", param="messages"
        )
    messages = []
    for index, message in enumerate(raw_messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if not isinstance(role, str) or role not in _ROLES:
            raise _invalid(f"Invalid role {role!r}.", f"messages[{index}].role")
        assert isinstance(message, Mapping)
        text = _text(message.get("content"), f"messages[{index}].content")
        messages.append({"role": "system" if role == "developer" else role, "content": text})
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid("Local models generate one choice per request: n must be 1.", "n")
    max_tokens = body.get("max_completion_tokens")
    param = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, param = body.get("max_tokens"), "max_tokens"
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise _invalid(f"{param} must be between 1 and {MAX_TOKENS_LIMIT}.", param)
    temperature = _number(body.get("temperature"), 1.0, "temperature")
    if not 0.0 <= temperature <= 2.0:
        raise _invalid("temperature must be between 0 and 2.", "temperature")
    top_p = _number(body.get("top_p"), 1.0, "top_p")
    if not 0.0 < top_p <= 1.0:
        raise _invalid("top_p must be greater than 0 and at most 1.", "top_p")
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise _invalid("stop must be a string or an array of up to 4 non-empty strings.", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _invalid("seed must be an integer.", "seed")
    options = body.get("stream_options") or {}
    return _Params(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=None if seed is None else int(seed),
        stop=list(stops),
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(options, Mapping) and options.get("include_usage")),
    )


_END = object()


@dataclass
class _Outcome:
    """Filled in by the generating thread: what `Generation` reports once exhausted."""

    finish_reason: str | None = None
    completion_tokens: int | None = None


class ChatService:
    """Serves `POST /v1/chat/completions` for the local provider's models (see the module doc)."""

    def __init__(
        self,
        source: ModelSource | None,
        jobs: OwnershipCheck,
        *,
        max_loaded_models: int = 4,
        threads: int = 2,
        clock: Clock = time.time,
    ) -> None:
        self._source = source
        self._jobs = jobs
        self._clock = clock
        self._max_loaded = max_loaded_models
        self._models: OrderedDict[Path, Any] = OrderedDict()
        self._loading: dict[Path, asyncio.Lock] = {}
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tunegate-inference")

    async def create(self, owner: str, body: Mapping[str, Any]) -> ChatReply:
        """Check, resolve and load before answering (errors stay ordinary JSON errors); the
        returned chunks generate lazily."""
        params = check_request(body)
        model = await self._load(await self._model_dir(owner, params.model))
        completion_id = "chatcmpl-" + secrets.token_hex(12)
        created = int(self._clock())
        if params.stream:
            return ChatReply("text/event-stream", self._stream(model, params, completion_id, created))
        return ChatReply("application/json", self._whole(model, params, completion_id, created))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- models -------------------------------------------------------------------------------

    async def _model_dir(self, owner: str, name: str) -> Path:
        if self._source is None:
            raise gateway_model_not_found(name)
        base = await self._source.base_model_dir(name)
        if base is not None:
            return base
        found = await self._source.model_dir(name)
        if found is None:
            raise gateway_model_not_found(name)
        native_id, path = found
        if await self._jobs.owned_native_job(owner, self._source.name, native_id) is None:
            raise gateway_model_not_found(name)  # another owner's model: indistinguishable from none
        return path

    async def _load(self, path: Path) -> Any:
        lock = self._loading.setdefault(path, asyncio.Lock())
        async with lock:
            model = self._models.get(path)
            if model is None:
                from tunegate.server.providers.local._inference import ChatModel

                loop = asyncio.get_running_loop()
                model = await loop.run_in_executor(self._executor, ChatModel.load, path)
                self._models[path] = model
                while len(self._models) > self._max_loaded:
                    self._models.popitem(last=False)
            self._models.move_to_end(path)
            return model

    # -- generation ---------------------------------------------------------------------------

    async def _pieces(self, model: Any, params: _Params, outcome: _Outcome) -> AsyncIterator[str]:
        """The model's text pieces, generated in the pool; stops it when the consumer leaves."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        halt = threading.Event()

        def run() -> None:
            try:
                pieces = model.generate(
                    params.messages,
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    seed=params.seed,
                    stop=params.stop,
                )
                for piece in pieces:
                    if halt.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
                outcome.finish_reason = getattr(pieces, "finish_reason", None)
                outcome.completion_tokens = getattr(pieces, "completion_tokens", None)
            except BaseException as exc:  # handed to the loop, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = loop.run_in_executor(self._executor, run)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str)
                yield item
        finally:
            halt.set()
            del future

    def _usage(self, model: Any, params: _Params, completion_tokens: int) -> dict[str, int]:
        prompt_tokens = 0
        count = getattr(model, "count_tokens", None)
        if callable(count):
            try:
                prompt_tokens = int(count(params.messages))
            except Exception:
                prompt_tokens = 0
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    async def _whole(
        self, model: Any, params: _Params, completion_id: str, created: int
    ) -> AsyncIterator[bytes]:
        text: list[str] = []
        outcome = _Outcome()
        async for piece in self._pieces(model, params, outcome):
            text.append(piece)
        finish = outcome.finish_reason or ("length" if len(text) >= params.max_tokens else "stop")
        completion_tokens = outcome.completion_tokens if outcome.completion_tokens is not None else len(text)
        document = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": params.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(text),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": self._usage(model, params, completion_tokens),
            "service_tier": "default",
        }
        yield json.dumps(document, separators=(",", ":")).encode()

    async def _stream(
        self, model: Any, params: _Params, completion_id: str, created: int
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": params.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra,
            }
            if params.include_usage and "usage" not in extra:
                body["usage"] = None
            return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        count = 0
        outcome = _Outcome()
        async for piece in self._pieces(model, params, outcome):
            count += 1
            if piece:
                yield chunk({"content": piece}, None)
        yield chunk({}, outcome.finish_reason or ("length" if count >= params.max_tokens else "stop"))
        if outcome.completion_tokens is not None:
            count = outcome.completion_tokens
        if params.include_usage:
            usage = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": params.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [],
                "usage": self._usage(model, params, count),
            }
            yield b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
