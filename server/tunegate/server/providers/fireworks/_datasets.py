"""Fireworks datasets, the provider's files: ids, the upload flows, the state, the line checks.

Sources: ../shared/reference/providers.md §7.2 and §7.4, providers-2026-12.md, and the
`fireworks-ai` SDK 1.2.30 (`types.Dataset`, `DatasetCreateParams`, `DatasetGetUploadEndpoint…`,
`DatasetUploadResponse`, and its own signed-URL helper `fireworks.lib.dataset_upload`).

Theory of operation (`upload_dataset`):

1. `POST /v1/accounts/{a}/datasets` `{datasetId, dataset: {userUploaded: {}, displayName}}` with
   the id `dataset_id(file_id)` — the same gateway file always asks for the same dataset. A 409
   (the id exists: an earlier copy of this very file) is looked at: a `READY` dataset is re-used
   as is (answered `processed`, nothing is sent again); any other (an upload cut short, or one
   that failed validation) is uploaded into again — both upload flows replace the dataset's
   files — and validated again. The registry copies a file to an account once at a time per
   process, so two uploads into one dataset overlap only across processes (the last one wins;
   both carry the same bytes).
2. Size ≤ `multipart_limit` (Fireworks: 150 MB): `POST …/datasets/{id}:upload`, a streamed
   multipart form with one `file` part. Larger: `POST …/datasets/{id}:getUploadEndpoint`
   `{filenameToSize: {name: "<bytes>"}}` (int64 as a string) → `{filenameToSignedUrls}`; then
   `PUT` the bytes to the signed URL, streamed, with the exact `Content-Length`,
   `Content-Type: application/octet-stream` and `X-Goog-Content-Length-Range: N,N` (both signed
   into the URL, as the SDK sends them). The PUT goes through the adapter's pooled client with
   no endpoint headers, so the Fireworks credential never reaches the storage host; the URL must
   be `https` (the SDK's rule) unless it is on the Fireworks endpoint's own origin.
3. `POST …/datasets/{id}:validateUpload` `{}`; Fireworks then validates the data on its side.
   The answer is `ProviderFile(id, "uploaded")`; `get_dataset` reports `processed` once the
   dataset's `state` is `READY`.

The file part is named `<dataset id>.jsonl`: Fireworks' trainers find shards by a lower-case
`.jsonl` extension (SDK), and the caller's file name may have none; the caller's name is kept in
`displayName`.

`check_lines` returns a `FireworksLineCheck`: Fireworks reads OpenAI's training lines as they
are (§7.4), so the check passes the bytes through unchanged and only refuses what Fireworks
would not take, listing every bad line at once (`LineConversionError`, code
`invalid_training_file`). Blank lines pass (they count for line numbers); a file needs at least
`MIN_EXAMPLES` (3) examples.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, Literal

import orjson
from tunegate.server.errors import Aborted, Internal, InvalidArgument, UpstreamError
from tunegate.server.providers._http import Endpoint, HttpClient
from tunegate.server.providers._jsonl import DEFAULT_MAX_LINE, LineConversionError, LineConverter
from tunegate.server.providers._multipart import MultipartFile
from tunegate.server.providers.interface import ProviderFile

__all__ = [
    "MIN_EXAMPLES",
    "MULTIPART_LIMIT",
    "FireworksLineCheck",
    "check_lines",
    "dataset_id",
    "dataset_name",
    "get_dataset",
    "provider_file_from_dataset",
    "upload_dataset",
]

MULTIPART_LIMIT: Final = 150 * 10**6
"""The largest file `:upload` takes (providers.md §7.2: 150 MB); larger ones use a signed URL."""
MIN_EXAMPLES: Final = 3
"""Fireworks trains on 3 to 3 000 000 examples (providers.md §7.4)."""
DATASET_PREFIX: Final = "tg-"

Method = Literal["supervised", "dpo"]

_FILE_ID = re.compile(r"file-([A-Za-z0-9]{1,48})")
# Fireworks resource ids (the SDK's `_RESOURCE_ID_RE`, 1-63 characters); a dataset's must start
# with a letter (providers.md §7.2).
_DATASET_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def dataset_id(file_id: str) -> str:
    """The Fireworks dataset id of gateway file `file_id` (`file-` + letters and digits):
    `tg-<letters and digits lower-cased>-<case mask>`, the mask (bit i set when character i was
    upper-case) in base 36. Deterministic, distinct for distinct file ids (case included), and
    within Fireworks' alphabet: lower-case letters, digits and `-`, a letter first, ≤ 63
    characters. `ValueError` for anything that is not a gateway file id."""
    match = _FILE_ID.fullmatch(file_id)
    if match is None:
        raise ValueError(f"not a gateway file id: {file_id!r}")
    unique = match.group(1)
    mask = sum(1 << i for i, c in enumerate(unique) if c.isupper())
    digits = ""
    while True:
        mask, rest = divmod(mask, 36)
        digits = _BASE36[rest] + digits
        if not mask:
            break
    result = f"{DATASET_PREFIX}{unique.lower()}-{digits}"
    if _DATASET_ID.fullmatch(result) is None:  # pragma: no cover - bounded by _FILE_ID's length
        raise ValueError(f"gateway file id too long for a Fireworks dataset id: {file_id!r}")
    return result


def dataset_name(account_id: str, dataset: str) -> str:
    """The dataset's resource name, as a job's `dataset` field takes it."""
    return f"accounts/{account_id}/datasets/{dataset}"


def _path(account_id: str, dataset: str | None = None, action: str = "") -> str:
    base = f"/v1/accounts/{urllib.parse.quote(account_id, safe='')}/datasets"
    if dataset is None:
        return base
    if _DATASET_ID.fullmatch(dataset) is None:
        raise ValueError(f"not a Fireworks dataset id: {dataset!r}")
    return f"{base}/{dataset}{action}"


# --- upload ---------------------------------------------------------------------------------------


async def upload_dataset(
    http: HttpClient,
    endpoint: Endpoint,
    account_id: str,
    *,
    file_id: str,
    filename: str,
    size: int,
    chunks: AsyncIterator[bytes],
    multipart_limit: int = MULTIPART_LIMIT,
) -> ProviderFile:
    """Copies gateway file `file_id` (`size` bytes from `chunks`, streamed, never held whole) to
    a Fireworks dataset of `account_id` (see the module docstring for the flow). Returns
    `ProviderFile(dataset id, "uploaded")`, or `"processed"` when a `READY` dataset of the same
    file already existed (then `chunks` is not read). Raises the `HttpClient`'s errors; `Internal`
    when `chunks` does not yield exactly `size` bytes."""
    ident = dataset_id(file_id)
    create = {"datasetId": ident, "dataset": {"userUploaded": {}, "displayName": filename[:200]}}
    try:
        await http.request_json("POST", endpoint, _path(account_id), json=create)
    except Aborted:  # 409: this file's dataset exists already (see the module docstring)
        existing = await get_dataset(http, endpoint, account_id, ident)
        if existing.status == "processed":
            return existing
    shard = f"{ident}.jsonl"
    if size <= multipart_limit:
        body = MultipartFile(fields={}, file_field="file", filename=shard, size=size, chunks=chunks)
        await http.request_json(
            "POST",
            endpoint,
            _path(account_id, ident, ":upload"),
            content=body.stream(),
            headers=body.headers(),
        )
    else:
        url = await _signed_url(http, endpoint, account_id, ident, shard, size)
        await http.request(
            "PUT",
            Endpoint(url, {}, {}),
            "",
            content=_exactly(size, chunks),
            headers={
                "Content-Length": str(size),
                "Content-Type": "application/octet-stream",
                "X-Goog-Content-Length-Range": f"{size},{size}",
            },
        )
    # Validation only checks and finalises: asking twice is harmless, so it may be retried.
    await http.request_json(
        "POST", endpoint, _path(account_id, ident, ":validateUpload"), json={}, idempotent=True
    )
    return ProviderFile(id=ident, status="uploaded")


async def _signed_url(
    http: HttpClient, endpoint: Endpoint, account_id: str, ident: str, shard: str, size: int
) -> str:
    answer = await http.request_json(
        "POST",
        endpoint,
        _path(account_id, ident, ":getUploadEndpoint"),
        json={"filenameToSize": {shard: str(size)}},
        idempotent=True,
    )
    urls = answer.get("filenameToSignedUrls")
    url = urls.get(shard) if isinstance(urls, dict) else None
    if not isinstance(url, str) or not url:
        raise UpstreamError(f"The '{http.provider}' provider gave no upload URL for dataset {ident}.")
    target, own = urllib.parse.urlsplit(url), urllib.parse.urlsplit(endpoint.base_url)
    if target.scheme != "https" and (target.scheme, target.netloc) != (own.scheme, own.netloc):
        raise UpstreamError(
            f"The '{http.provider}' provider gave a non-https upload URL for dataset {ident}."
        )
    return url


async def _exactly(size: int, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks`, checked to add up to `size` bytes (the declared `Content-Length`)."""
    sent = 0
    async for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            raise Internal(f"The file has more than its declared {size} bytes.")
        if chunk:
            yield chunk
    if sent != size:
        raise Internal(f"The file ended after {sent} of its declared {size} bytes.")


# --- state ----------------------------------------------------------------------------------------


async def get_dataset(http: HttpClient, endpoint: Endpoint, account_id: str, dataset: str) -> ProviderFile:
    """`GET …/datasets/{dataset}` as a `ProviderFile` (`provider_file_from_dataset`)."""
    record = await http.request_json("GET", endpoint, _path(account_id, dataset))
    return provider_file_from_dataset(dataset, record)


def provider_file_from_dataset(dataset: str, record: Mapping[str, Any]) -> ProviderFile:
    """A Fireworks `Dataset` as a `ProviderFile`: `state: READY` is `processed`; a `status` whose
    `code` is set and not `OK` (a failed validation) is `error`, with Fireworks' `status.message`
    in `status_details`; anything else (`UPLOADING`, `STATE_UNSPECIFIED`) is `uploaded`."""
    if record.get("state") == "READY":
        return ProviderFile(id=dataset, status="processed")
    status = record.get("status")
    if isinstance(status, Mapping):
        code = status.get("code")
        if code not in (None, "", "OK", 0):
            message = status.get("message") or f"Fireworks could not validate the dataset ({code})."
            return ProviderFile(id=dataset, status="error", status_details=str(message))
    return ProviderFile(id=dataset, status="uploaded")


# --- line checks ----------------------------------------------------------------------------------

_CHAT_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
)
_SFT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_DPO_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


def _content_ok(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    if isinstance(content, str):
        return True
    if isinstance(content, list):
        return all(isinstance(part, dict) and part.get("type") in ("text", "image_url") for part in content)
    # An assistant turn may be only a tool call.
    return (
        content is None
        and message.get("role") == "assistant"
        and bool(message.get("tool_calls") or message.get("function_call"))
    )


def _messages_problem(messages: Any) -> str | None:
    """Why `messages` is not an OpenAI chat conversation Fireworks trains on, or None."""
    if not isinstance(messages, list) or not messages:
        return "no 'messages' list"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return "a message that is not an object"
        role = message.get("role")
        if role not in _CHAT_ROLES:
            return "a message with an unknown role"
        if role == "system" and index != 0:
            return "a system message that is not the first"
        if set(message) - _MESSAGE_KEYS:
            return "a message with an unknown key"
        weight = message.get("weight", 0)
        if "weight" in message and (role != "assistant" or type(weight) is not int or weight not in (0, 1)):
            return "a weight other than 0 or 1 on an assistant message"
        if not _content_ok(message):
            return "a message without text content"
    return None


def _sft_problem(line: Any) -> str | None:
    if not isinstance(line, dict):
        return "not a JSON object"
    if set(line) - _SFT_KEYS:
        return "an unknown top-level key"
    problem = _messages_problem(line.get("messages"))
    if problem is not None:
        return problem
    if not any(m.get("role") == "assistant" for m in line["messages"]):
        return "no assistant message"
    return None


def _dpo_problem(line: Any) -> str | None:
    if not isinstance(line, dict):
        return "not a JSON object"
    if "preferred_completion" in line or "non_preferred_completion" in line:
        return "the old '*_completion' keys (Fireworks reads 'preferred_output' / 'non_preferred_output')"
    if set(line) != _DPO_KEYS:
        return "not exactly 'input', 'preferred_output' and 'non_preferred_output'"
    prompt = line["input"]
    if not isinstance(prompt, dict) or set(prompt) - _INPUT_KEYS:
        return "an 'input' that is not a chat input"
    problem = _messages_problem(prompt.get("messages"))
    if problem is not None:
        return "an 'input' with " + problem
    if prompt["messages"][-1].get("role") == "assistant":
        return "an 'input' that ends with an assistant message"
    for key in ("preferred_output", "non_preferred_output"):
        output = line[key]
        if (
            not isinstance(output, list)
            or len(output) != 1
            or not isinstance(output[0], dict)
            or output[0].get("role") != "assistant"
            or _messages_problem(output) is not None
        ):
            return f"a '{key}' that is not one assistant message"
    return None


class FireworksLineCheck(LineConverter):
    """Push check of a training file for a Fireworks `method` job (`supervised`: OpenAI chat
    lines; `dpo`: OpenAI preference lines). `feed(chunk)` returns the same bytes, cut at line
    ends; `finish()` the rest, or raises `LineConversionError` listing every bad line, or
    `InvalidArgument` (code `invalid_training_file`) for fewer than `MIN_EXAMPLES` examples.
    The concatenated output equals the input, byte for byte, when nothing is refused."""

    def __init__(self, method: Method, *, param: str, max_line_bytes: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(param=param, max_line_bytes=max_line_bytes)
        self.method = method
        self._check = _sft_problem if method == "supervised" else _dpo_problem
        self.examples = 0
        self._last = False  # the line being converted is the file's unterminated last line

    def _lines(self, lines: list[bytes]) -> bytes:
        first = self._line + 1
        self._line += len(lines)
        for number, raw in enumerate(lines, first):
            if not raw.strip():
                continue
            try:
                problem = self._check(orjson.loads(raw))
            except orjson.JSONDecodeError:
                problem = "not valid JSON"
            if problem is None:
                self.examples += 1
            else:
                self._refuse(number, problem)
        if self.failed:
            return b""
        out = b"\n".join(lines)
        return out if self._last else out + b"\n"

    def _error(self) -> LineConversionError:
        target = "a Fireworks " + ("SFT" if self.method == "supervised" else "DPO") + " dataset"
        return LineConversionError(target, self._problems, self._param)

    def finish(self) -> bytes:
        self._last = True
        out = super().finish()
        if self.examples < MIN_EXAMPLES:
            raise InvalidArgument(
                f"A Fireworks training file needs at least {MIN_EXAMPLES} examples; this one has "
                f"{self.examples}.",
                code="invalid_training_file",
                param=self._param,
            )
        return out


def check_lines(method: Method, *, param: str, max_line_bytes: int = DEFAULT_MAX_LINE) -> FireworksLineCheck:
    """A fresh `FireworksLineCheck` (use with `_jsonl.convert_with` / `aconvert_with`)."""
    return FireworksLineCheck(method, param=param, max_line_bytes=max_line_bytes)
