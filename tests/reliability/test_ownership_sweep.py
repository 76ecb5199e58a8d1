"""An ownership sweep: owner A holds real resources of every kind (files, uploads, a succeeded
local job with events, checkpoints, a result file and an `ft:` model, a running job, a paused
job); every other caller — another owner under each credential shape, the anonymous caller,
and each unreadable credential (alone and next to A's own) — tries every route of the REST
surface and every RPC of the gRPC surface on A's ids.

The routes are enumerated from the protos' `google.api.http` annotations (and the RPCs from the
service descriptors) of every `tunegate.v1` module, so a new route without a case fails the
sweep. Expected: another owner gets 404 (`NOT_FOUND`) on A's ids and lists without them; an
unreadable credential gets 400 (`INVALID_ARGUMENT`) naming its header. A *cross-owner read* is
any 2xx answer to another caller that touches A's resource or shows one of A's ids; the sweep
counts them (must be 0) and then checks that A's resources are exactly as they were."""

from __future__ import annotations

import importlib
import json
import pkgutil
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, unquote

import grpc
import httpx
import openai
import pytest
import tunegate.v1
from google.api import annotations_pb2, httpbody_pb2
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tunegate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    fine_tuning_pb2,
    fine_tuning_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    uploads_pb2,
    uploads_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

from tests.conftest import Gateway, start_gateway
from tests.e2e.sdk import openai_client
from tests.e2e.test_unreadable_credentials import UNREADABLE, raw

MODEL = "tunegate-tiny"
LINES = "".join(
    json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Say w{i % 3}."},
                {"role": "assistant", "content": f"w{i % 3}"},
            ]
        }
    )
    + "\n"
    for i in range(12)
).encode()

SUMMARY: dict[str, dict[str, int]] = {}
"""Per surface: routes (or RPCs) swept, callers, attempts, cross-owner reads, unexpected answers."""


# -- the surface ---------------------------------------------------------------------------------


def _services() -> list[ServiceDescriptor]:
    services = []
    for module in pkgutil.iter_modules(tunegate.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"tunegate.v1.{module.name}").DESCRIPTOR
            services.extend(descriptor.services_by_name.values())
    return services


def rest_routes() -> set[tuple[str, str]]:
    """(VERB, path template) of every `google.api.http` annotation in `tunegate.v1`."""
    routes = set()
    for service in _services():
        for method in service.methods:
            options = method.GetOptions()
            if options.HasExtension(annotations_pb2.http):
                rule = options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                assert verb is not None and verb != "custom", method.full_name
                routes.add((verb.upper(), str(getattr(rule, verb))))
                for extra in rule.additional_bindings:
                    extra_verb = extra.WhichOneof("pattern")
                    routes.add((str(extra_verb).upper(), str(getattr(extra, str(extra_verb)))))
    return routes


def grpc_methods() -> set[str]:
    """`/package.Service/Method` of every RPC in `tunegate.v1`."""
    return {f"/{service.full_name}/{method.name}" for service in _services() for method in service.methods}


# -- owner A's world -----------------------------------------------------------------------------


@dataclass
class World:
    gateway: Gateway
    token: str
    file_id: str
    file_bytes: bytes
    big_file: str
    done_upload: str
    done_part: str
    done_file: str
    pending_upload: str
    pending_part: str
    pending_bytes: bytes
    succeeded_job: str
    model: str
    checkpoint_model: str
    result_file: str
    running_job: str
    paused_job: str
    virtual_key: str
    snapshot: dict[str, Any] = field(default_factory=dict)
    webhook_endpoint: str = ""
    webhook_secret: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def files(self) -> list[str]:
        return [self.file_id, self.big_file, self.done_file, self.result_file]

    @property
    def jobs(self) -> list[str]:
        return [self.succeeded_job, self.running_job, self.paused_job]

    @property
    def ids(self) -> list[str]:
        """Every identifier of A's that no other caller may ever be shown."""
        return [
            *self.files,
            self.done_upload,
            self.done_part,
            self.pending_upload,
            self.pending_part,
            *self.jobs,
            self.model,
            self.checkpoint_model,
            self.virtual_key,
            self.webhook_endpoint,
            self.webhook_secret,
        ]


def _wait(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job.status}"
        time.sleep(0.1)


def _snapshot(world: World) -> dict[str, Any]:
    """What A sees of its resources (ids, states, bytes, events, checkpoints)."""
    client = openai_client(world.gateway.base_url, world.token, max_retries=0)
    jobs = {job_id: client.fine_tuning.jobs.retrieve(job_id) for job_id in world.jobs}
    succeeded = jobs[world.succeeded_job]
    return {
        "files": sorted(f.id for f in client.files.list()),
        "contents": {file_id: client.files.content(file_id).read() for file_id in world.files},
        "jobs": sorted(j.id for j in client.fine_tuning.jobs.list(limit=100)),
        "succeeded": (succeeded.status, succeeded.fine_tuned_model, succeeded.result_files),
        "paused": jobs[world.paused_job].status,
        "events": [e.id for e in client.fine_tuning.jobs.list_events(world.succeeded_job, limit=100)],
        "checkpoints": [
            c.id for c in client.fine_tuning.jobs.checkpoints.list(world.succeeded_job, limit=100)
        ],
        "virtual_key": httpx.get(
            f"{world.gateway.base_url}/virtual-keys/{world.virtual_key}", headers=world.headers, timeout=30
        ).json(),
        "webhook_endpoints": httpx.get(
            world.gateway.base_url + "/webhook-endpoints", headers=world.headers, timeout=30
        ).json(),
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    gateway = start_gateway(
        tmp_path_factory.mktemp("sweep"), in_process=True, local_concurrency=1, local_train_threads=1
    )
    try:
        token = "sk-ownerA-" + secrets.token_hex(8)
        client = openai_client(gateway.base_url, token, max_retries=0)
        file_id = client.files.create(file=("train.jsonl", LINES), purpose="fine-tune").id
        # Enough steps that the running job is still running when the sweeps end.
        big_file = client.files.create(file=("big.jsonl", LINES * 40), purpose="fine-tune").id

        upload = client.uploads.create(
            bytes=6, filename="done.jsonl", mime_type="text/jsonl", purpose="batch"
        )
        done_part = client.uploads.parts.create(upload.id, data=b"{}\n{}\n").id
        completed = client.uploads.complete(upload.id, part_ids=[done_part])
        assert completed.file is not None
        pending = client.uploads.create(bytes=3, filename="p.jsonl", mime_type="text/jsonl", purpose="batch")
        pending_part = client.uploads.parts.create(pending.id, data=b"{}\n").id

        # The succeeded job trains alone; its model answers A (the control for the 404s others
        # get, and it loads the model once); then one job runs while another waits paused.
        succeeded = client.fine_tuning.jobs.create(
            model=MODEL, training_file=file_id, suffix="a", hyperparameters={"n_epochs": 1, "batch_size": 4}
        )
        done = _wait(client, succeeded.id, ("succeeded", "failed", "cancelled"))
        assert done.status == "succeeded", done.error
        checkpoints = list(client.fine_tuning.jobs.checkpoints.list(succeeded.id, limit=100))
        assert checkpoints and done.fine_tuned_model and len(done.result_files) == 1
        _chat_as_a(client, done.fine_tuned_model)
        running = client.fine_tuning.jobs.create(
            model=MODEL, training_file=big_file, hyperparameters={"n_epochs": 50, "batch_size": 1}
        )
        # It holds the only training slot before the next job exists: two jobs validating at
        # once finish in either order, and the one done first trains first.
        _wait(client, running.id, ("running",))
        paused = client.fine_tuning.jobs.create(
            model=MODEL, training_file=file_id, hyperparameters={"n_epochs": 50, "batch_size": 1}
        )
        _wait(client, paused.id, ("queued",))
        pause_status: str = client.fine_tuning.jobs.pause(paused.id).status  # newer than the SDK's enum
        assert pause_status == "paused"
        _wait(client, running.id, ("running",))
        virtual_key = "a-vk-" + secrets.token_hex(4)
        made = httpx.post(
            f"{gateway.base_url}/virtual-keys",
            headers={"Authorization": f"Bearer {token}"},
            json={"slug": virtual_key, "provider": "openai", "key": "sk-a-virtual-" + secrets.token_hex(8)},
            timeout=30,
        )
        assert made.status_code == 200, made.text
        world = World(
            gateway=gateway,
            token=token,
            file_id=file_id,
            file_bytes=LINES,
            big_file=big_file,
            done_upload=upload.id,
            done_part=done_part,
            done_file=completed.file.id,
            pending_upload=pending.id,
            pending_part=pending_part,
            pending_bytes=b"{}\n",
            succeeded_job=succeeded.id,
            model=done.fine_tuned_model,
            checkpoint_model=checkpoints[0].fine_tuned_model_checkpoint,
            result_file=done.result_files[0],
            running_job=running.id,
            paused_job=paused.id,
            virtual_key=virtual_key,
        )
        # A webhook endpoint (a public name: nothing to deliver to it during the sweeps).
        endpoint = httpx.post(
            gateway.base_url + "/webhook-endpoints",
            json={"url": "https://hooks.example.com/owner-a"},
            headers=world.headers,
            timeout=30,
        ).json()
        world.webhook_endpoint, world.webhook_secret = endpoint["id"], endpoint["secret"]
        world.snapshot = _snapshot(world)
        yield world
    finally:  # stops the workers too
        gateway.close()


def _chat_as_a(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say w1."}], max_tokens=2, temperature=0
    )
    assert reply.model == model and reply.choices[0].message.role == "assistant"


def assert_unchanged(world: World) -> None:
    """A's resources are exactly as they were, the running job still runs and A's model still
    answers A."""
    assert _snapshot(world) == world.snapshot
    client = openai_client(world.gateway.base_url, world.token, max_retries=0)
    running: str = client.fine_tuning.jobs.retrieve(world.running_job).status
    assert running == "running"
    assert client.files.content(world.file_id).read() == world.file_bytes
    _chat_as_a(client, world.model)


# -- REST ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One request of the sweep. `touches_a`: it names one of A's resources, so any 2xx is a
    cross-owner read. `allowed`: the statuses another owner may get."""

    method: str
    path: str
    json: Any = None
    form: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    touches_a: bool = True
    allowed: frozenset[int] = frozenset({404})

    def body(self) -> tuple[bytes, str | None]:
        if self.json is None and self.form is None and self.files is None:
            return (b"{}", "application/json") if self.method == "POST" else (b"", None)
        request = httpx.Request(
            self.method, "http://127.0.0.1/", json=self.json, data=self.form, files=self.files
        )
        return request.read(), request.headers.get("content-type")


OK = frozenset({200})
REFUSED = frozenset({400, 404})
FORBIDDEN = frozenset({403})
Cases = dict[tuple[str, str], Callable[[World, dict[str, str] | None], list[Attempt]]]


def _own_upload(world: World, headers: dict[str, str] | None) -> str:
    """A pending upload of the caller's own (A's pending upload id when the caller cannot own one)."""
    if headers is None:
        return world.pending_upload
    response = httpx.post(
        world.gateway.base_url + "/uploads",
        json={"bytes": 3, "filename": "b.jsonl", "mime_type": "text/jsonl", "purpose": "batch"},
        headers=headers,
        timeout=30,
    )
    return str(response.json()["id"]) if response.status_code == 200 else world.pending_upload


def _own_file(world: World, headers: dict[str, str] | None) -> str:
    """A file of the caller's own (A's file id when the caller cannot own one)."""
    if headers is None:
        return world.file_id
    files = {"file": ("own.jsonl", LINES)}
    response = httpx.post(
        world.gateway.base_url + "/files",
        data={"purpose": "fine-tune"},
        files=files,
        headers=headers,
        timeout=30,
    )
    return str(response.json()["id"]) if response.status_code == 200 else world.file_id


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Say w1."}], "max_tokens": 2, **extra}


REST_CASES: Cases = {
    ("POST", "/v1/files"): lambda w, h: [
        Attempt(
            "POST",
            "/files",
            form={"purpose": "fine-tune"},
            files={"file": ("b.jsonl", LINES)},
            touches_a=False,
            allowed=OK,
        )
    ],
    ("GET", "/v1/files"): lambda w, h: [
        Attempt("GET", "/files", touches_a=False, allowed=OK),
        Attempt("GET", "/files?purpose=fine-tune-results", touches_a=False, allowed=OK),
        Attempt("GET", f"/files?after={w.file_id}&order=asc", touches_a=False, allowed=OK | REFUSED),
    ],
    ("GET", "/v1/files/{file_id}"): lambda w, h: [Attempt("GET", f"/files/{f}") for f in w.files],
    ("DELETE", "/v1/files/{file_id}"): lambda w, h: [Attempt("DELETE", f"/files/{f}") for f in w.files],
    ("GET", "/v1/files/{file_id}/content"): lambda w, h: [
        Attempt("GET", f"/files/{f}/content") for f in w.files
    ],
    ("POST", "/v1/uploads"): lambda w, h: [
        Attempt(
            "POST",
            "/uploads",
            json={"bytes": 3, "filename": "b.jsonl", "mime_type": "text/jsonl", "purpose": "batch"},
            touches_a=False,
            allowed=OK,
        )
    ],
    ("POST", "/v1/uploads/{upload_id}/parts"): lambda w, h: [
        Attempt("POST", f"/uploads/{u}/parts", files={"data": ("blob", b"{}\n")})
        for u in (w.pending_upload, w.done_upload)
    ],
    ("POST", "/v1/uploads/{upload_id}/complete"): lambda w, h: [
        Attempt("POST", f"/uploads/{w.pending_upload}/complete", json={"part_ids": [w.pending_part]}),
        Attempt("POST", f"/uploads/{w.done_upload}/complete", json={"part_ids": [w.done_part]}),
        # The caller's own upload assembled from A's parts.
        Attempt(
            "POST",
            f"/uploads/{_own_upload(w, h)}/complete",
            json={"part_ids": [w.pending_part]},
            allowed=REFUSED,
        ),
        Attempt(
            "POST",
            f"/uploads/{_own_upload(w, h)}/complete",
            json={"part_ids": [w.done_part]},
            allowed=REFUSED,
        ),
    ],
    ("POST", "/v1/uploads/{upload_id}/cancel"): lambda w, h: [
        Attempt("POST", f"/uploads/{u}/cancel") for u in (w.pending_upload, w.done_upload)
    ],
    ("POST", "/v1/fine_tuning/jobs"): lambda w, h: [
        Attempt(
            "POST", "/fine_tuning/jobs", json={"model": MODEL, "training_file": w.file_id}, allowed=REFUSED
        ),
        Attempt(
            "POST",
            "/fine_tuning/jobs",
            json={"model": MODEL, "training_file": w.result_file},
            allowed=REFUSED,
        ),
        Attempt(
            "POST",
            "/fine_tuning/jobs",
            json={"model": MODEL, "training_file": _own_file(w, h), "validation_file": w.file_id},
            allowed=REFUSED,
        ),
        Attempt(
            "POST",
            "/fine_tuning/jobs",
            json={"model": w.model, "training_file": _own_file(w, h)},
            allowed=REFUSED,
        ),
    ],
    ("GET", "/v1/fine_tuning/jobs"): lambda w, h: [
        Attempt("GET", "/fine_tuning/jobs?limit=100", touches_a=False, allowed=OK),
        Attempt("GET", f"/fine_tuning/jobs?after={w.succeeded_job}", touches_a=False, allowed=OK | REFUSED),
    ],
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"): lambda w, h: [
        Attempt("GET", f"/fine_tuning/jobs/{j}") for j in w.jobs
    ],
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"): lambda w, h: [
        Attempt("POST", f"/fine_tuning/jobs/{j}/cancel") for j in w.jobs
    ],
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause"): lambda w, h: [
        Attempt("POST", f"/fine_tuning/jobs/{j}/pause") for j in w.jobs
    ],
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume"): lambda w, h: [
        Attempt("POST", f"/fine_tuning/jobs/{j}/resume") for j in w.jobs
    ],
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"): lambda w, h: [
        *(Attempt("GET", f"/fine_tuning/jobs/{j}/events?limit=100") for j in w.jobs),
        *(Attempt("GET", f"/fine_tuning/jobs/{j}/events?stream=true") for j in w.jobs),  # the watch
    ],
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"): lambda w, h: [
        Attempt("GET", f"/fine_tuning/jobs/{j}/checkpoints?limit=100") for j in w.jobs
    ],
    ("POST", "/v1/chat/completions"): lambda w, h: [
        Attempt("POST", "/chat/completions", json=_chat(w.model)),
        Attempt("POST", "/chat/completions", json=_chat(w.model, stream=True)),
        Attempt("POST", "/chat/completions", json=_chat(w.checkpoint_model)),
    ],
    # Key management needs an admin key: nobody here has one.
    ("POST", "/v1/api-keys"): lambda w, h: [
        Attempt("POST", "/api-keys", json={"tenant": "b", "name": "x"}, touches_a=False, allowed=FORBIDDEN)
    ],
    ("GET", "/v1/api-keys"): lambda w, h: [Attempt("GET", "/api-keys", touches_a=False, allowed=FORBIDDEN)],
    ("DELETE", "/v1/api-keys/{id}"): lambda w, h: [
        Attempt("DELETE", "/api-keys/0123456789ab", touches_a=False, allowed=FORBIDDEN)
    ],
    ("POST", "/v1/virtual-keys"): lambda w, h: [
        Attempt(
            "POST",
            "/virtual-keys",
            json={"slug": "b-own", "provider": "openai", "key": "sk-b-own-key"},
            touches_a=False,
            allowed=OK | REFUSED,  # made, or made already by the same owner under another header
        )
    ],
    ("GET", "/v1/virtual-keys"): lambda w, h: [Attempt("GET", "/virtual-keys", touches_a=False, allowed=OK)],
    ("GET", "/v1/virtual-keys/{slug}"): lambda w, h: [Attempt("GET", f"/virtual-keys/{w.virtual_key}")],
    ("PUT", "/v1/virtual-keys/{slug}"): lambda w, h: [
        Attempt("PUT", f"/virtual-keys/{w.virtual_key}", json={"provider": "openai", "key": "sk-stolen"})
    ],
    ("DELETE", "/v1/virtual-keys/{slug}"): lambda w, h: [Attempt("DELETE", f"/virtual-keys/{w.virtual_key}")],
    ("GET", "/v1/models"): lambda w, h: [
        Attempt("GET", "/models", touches_a=False, allowed=frozenset({200}))
    ],
    ("GET", "/v1/models/{model}"): lambda w, h: [
        Attempt("GET", f"/models/{quote(m, safe='')}") for m in (w.model, w.checkpoint_model)
    ],
    ("POST", "/v1/webhook-endpoints"): lambda w, h: [
        Attempt(
            "POST",
            "/webhook-endpoints",
            json={"url": "https://hooks.example.com/other"},
            touches_a=False,
            allowed=OK,
        )
    ],
    ("GET", "/v1/webhook-endpoints"): lambda w, h: [
        Attempt("GET", "/webhook-endpoints", touches_a=False, allowed=OK)
    ],
    ("GET", "/v1/webhook-endpoints/{id}"): lambda w, h: [
        Attempt("GET", f"/webhook-endpoints/{w.webhook_endpoint}")
    ],
    ("DELETE", "/v1/webhook-endpoints/{id}"): lambda w, h: [
        Attempt("DELETE", f"/webhook-endpoints/{w.webhook_endpoint}")
    ],
}


def rest_callers(world: World) -> list[tuple[str, list[tuple[str, bytes]], str | None]]:
    """(label, headers, the header an unreadable credential is refused for, else None)."""
    other = "sk-ownerB-" + secrets.token_hex(8)
    a_bearer = ("authorization", f"Bearer {world.token}".encode())
    callers: list[tuple[str, list[tuple[str, bytes]], str | None]] = [
        ("owner B (Bearer)", [("authorization", f"Bearer {other}".encode())], None),
        ("owner B (api-key)", [("api-key", other.encode())], None),
        ("owner B (bare authorization)", [("authorization", other.encode())], None),
        ("tenant with A's token as gateway key", [("x-portkey-api-key", world.token.encode())], None),
        ("tenant B next to A's Bearer", [("x-portkey-api-key", b"pk-tenantB"), a_bearer], None),
        ("anonymous", [], None),
        ("anonymous (Basic auth)", [("authorization", b"Basic dXNlcjpwYXNz")], None),
        ("anonymous (empty gateway key)", [("x-portkey-api-key", b"")], None),
    ]
    for header, value in UNREADABLE:
        callers.append((f"unreadable {header}={value!r}", [(header, value)], header))
        if header != "authorization":
            callers.append(
                (f"unreadable {header}={value!r} + A's Bearer", [(header, value), a_bearer], header)
            )
    return callers


def _leaks(world: World, body: bytes, request: str) -> list[str]:
    """A's ids in a response body that the request itself did not name."""
    return [i for i in world.ids if i.encode() in body and i not in request]


def test_every_route_and_rpc_has_a_case() -> None:
    assert rest_routes() == set(REST_CASES), "routes and sweep cases differ"
    assert grpc_methods() == set(GRPC_CASES), "RPCs and sweep cases differ"


def test_rest_ownership_sweep(world: World) -> None:
    assert rest_routes() <= set(REST_CASES), f"routes without a sweep case: {rest_routes() - set(REST_CASES)}"
    callers = rest_callers(world)
    attempts = cross_owner_reads = 0
    unexpected: list[str] = []
    for label, headers, refused_for in callers:
        text_headers = {k: v.decode() for k, v in headers} if refused_for is None else None
        for route in sorted(REST_CASES):
            for attempt in REST_CASES[route](world, text_headers):
                body, content_type = attempt.body()
                sent = [*headers, ("content-type", content_type.encode())] if content_type else headers
                status, answer = raw(world.gateway, attempt.method, attempt.path, sent, body)
                attempts += 1
                where = f"{label}: {attempt.method} {attempt.path} -> {status} {answer[:200]!r}"
                leaked = _leaks(world, answer, unquote(attempt.path) + body.decode("latin-1"))
                if 200 <= status < 300 and (attempt.touches_a or leaked):
                    cross_owner_reads += 1
                    unexpected.append("CROSS-OWNER READ " + where)
                elif leaked:
                    unexpected.append(f"leaks {leaked}: {where}")
                elif refused_for is not None:
                    error = json.loads(answer).get("error") or {} if status == 400 else {}
                    if status != 400 or error.get("param") != refused_for:
                        unexpected.append(where)
                elif status not in attempt.allowed:
                    unexpected.append(where)
    SUMMARY["rest"] = {
        "routes": len(REST_CASES),
        "callers": len(callers),
        "attempts": attempts,
        "cross_owner_reads": cross_owner_reads,
        "unexpected": len(unexpected),
    }
    print(f"\nREST ownership sweep: {SUMMARY['rest']}")
    assert unexpected == [], "\n".join(unexpected)
    assert cross_owner_reads == 0
    assert attempts >= len(REST_CASES) * len(callers)
    assert_unchanged(world)


# -- gRPC ------------------------------------------------------------------------------------------


Metadata = tuple[tuple[str, str | bytes], ...]
Call = Callable[[grpc.Channel, Metadata], Any]
GRPC_PURPOSE = files_pb2.FilePurpose.Value("FILE_PURPOSE_BATCH")


def _stream_file(channel: grpc.Channel, md: Metadata) -> Any:
    requests = iter(
        [
            files_pb2.CreateFileRequest(
                metadata=files_pb2.FileMetadata(filename="b.jsonl", purpose=GRPC_PURPOSE, bytes=3)
            ),
            files_pb2.CreateFileRequest(chunk=b"{}\n"),
        ]
    )
    return files_pb2_grpc.FilesStub(channel).CreateFile(requests, metadata=md, timeout=30)


def _content(file_id: str) -> Call:
    def call(channel: grpc.Channel, md: Metadata) -> Any:
        stub = files_pb2_grpc.FilesStub(channel)
        return list(
            stub.GetFileContent(files_pb2.GetFileContentRequest(file_id=file_id), metadata=md, timeout=30)
        )

    return call


def _part(upload_id: str) -> Call:
    def call(channel: grpc.Channel, md: Metadata) -> Any:
        requests = iter(
            [
                uploads_pb2.AddUploadPartRequest(
                    metadata=uploads_pb2.UploadPartMetadata(upload_id=upload_id)
                ),
                uploads_pb2.AddUploadPartRequest(chunk=b"{}\n"),
            ]
        )
        return uploads_pb2_grpc.UploadsStub(channel).AddUploadPart(requests, metadata=md, timeout=30)

    return call


def _unary(stub: Callable[[grpc.Channel], Any], rpc: str, request: Message) -> Call:
    def call(channel: grpc.Channel, md: Metadata) -> Any:
        return getattr(stub(channel), rpc)(request, metadata=md, timeout=30)

    return call


def _chat_call(model: str, stream: bool) -> Call:
    body = httpbody_pb2.HttpBody(
        content_type="application/json", data=json.dumps(_chat(model, stream=stream)).encode()
    )
    request = chat_pb2.CreateChatCompletionRequest(model=model, stream=stream, body=body)

    def call(channel: grpc.Channel, md: Metadata) -> Any:
        stub = chat_pb2_grpc.ChatCompletionsStub(channel)
        if stream:
            return list(stub.StreamChatCompletion(request, metadata=md, timeout=30))
        return stub.CreateChatCompletion(request, metadata=md, timeout=30)

    return call


def _watch(job_id: str) -> Call:
    def call(channel: grpc.Channel, md: Metadata) -> Any:
        stub = fine_tuning_pb2_grpc.FineTuningStub(channel)
        request = fine_tuning_pb2.WatchFineTuningJobRequest(fine_tuning_job_id=job_id)
        return list(stub.WatchFineTuningJob(request, metadata=md, timeout=30))

    return call


@dataclass(frozen=True)
class RpcAttempt:
    call: Call
    touches_a: bool = True
    allowed: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.NOT_FOUND})


RPC_OK = frozenset({grpc.StatusCode.OK})
RPC_REFUSED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})
Files, Uploads, Jobs, Hooks = (
    files_pb2_grpc.FilesStub,
    uploads_pb2_grpc.UploadsStub,
    fine_tuning_pb2_grpc.FineTuningStub,
    webhooks_pb2_grpc.WebhookEndpointsStub,
)
F, U, J, A = files_pb2, uploads_pb2, fine_tuning_pb2, admin_pb2
Keys, VKeys = admin_pb2_grpc.ApiKeysStub, admin_pb2_grpc.VirtualKeysStub
RPC_FORBIDDEN = frozenset({grpc.StatusCode.PERMISSION_DENIED})
F, U, J, W = files_pb2, uploads_pb2, fine_tuning_pb2, webhooks_pb2


def _per_job(rpc: str, request: Callable[..., Message]) -> Callable[[World], list[RpcAttempt]]:
    """`rpc` on each of A's jobs."""
    return lambda w: [RpcAttempt(_unary(Jobs, rpc, request(fine_tuning_job_id=j))) for j in w.jobs]


GRPC_CASES: dict[str, Callable[[World], list[RpcAttempt]]] = {
    "/tunegate.v1.Files/CreateFile": lambda w: [RpcAttempt(_stream_file, touches_a=False, allowed=RPC_OK)],
    "/tunegate.v1.Files/ListFiles": lambda w: [
        RpcAttempt(_unary(Files, "ListFiles", F.ListFilesRequest(limit=100)), touches_a=False, allowed=RPC_OK)
    ],
    "/tunegate.v1.Files/GetFile": lambda w: [
        RpcAttempt(_unary(Files, "GetFile", F.GetFileRequest(file_id=f))) for f in w.files
    ],
    "/tunegate.v1.Files/DeleteFile": lambda w: [
        RpcAttempt(_unary(Files, "DeleteFile", F.DeleteFileRequest(file_id=f))) for f in w.files
    ],
    "/tunegate.v1.Files/GetFileContent": lambda w: [RpcAttempt(_content(f)) for f in w.files],
    "/tunegate.v1.Uploads/CreateUpload": lambda w: [
        RpcAttempt(
            _unary(
                Uploads,
                "CreateUpload",
                U.CreateUploadRequest(filename="b", purpose=GRPC_PURPOSE, bytes=3, mime_type="text/jsonl"),
            ),
            touches_a=False,
            allowed=RPC_OK,
        )
    ],
    "/tunegate.v1.Uploads/AddUploadPart": lambda w: [
        RpcAttempt(_part(u)) for u in (w.pending_upload, w.done_upload)
    ],
    "/tunegate.v1.Uploads/CompleteUpload": lambda w: [
        RpcAttempt(_unary(Uploads, "CompleteUpload", U.CompleteUploadRequest(upload_id=u, part_ids=[p])))
        for u, p in ((w.pending_upload, w.pending_part), (w.done_upload, w.done_part))
    ],
    "/tunegate.v1.Uploads/CancelUpload": lambda w: [
        RpcAttempt(_unary(Uploads, "CancelUpload", U.CancelUploadRequest(upload_id=u)))
        for u in (w.pending_upload, w.done_upload)
    ],
    "/tunegate.v1.FineTuning/CreateFineTuningJob": lambda w: [
        RpcAttempt(
            _unary(
                Jobs,
                "CreateFineTuningJob",
                J.CreateFineTuningJobRequest(model=MODEL, training_file=w.file_id),
            ),
            allowed=RPC_REFUSED,
        )
    ],
    "/tunegate.v1.FineTuning/ListFineTuningJobs": lambda w: [
        RpcAttempt(
            _unary(Jobs, "ListFineTuningJobs", J.ListFineTuningJobsRequest(limit=100)),
            touches_a=False,
            allowed=RPC_OK,
        )
    ],
    **{
        f"/tunegate.v1.FineTuning/{rpc}": _per_job(rpc, request)
        for rpc, request in [
            ("GetFineTuningJob", J.GetFineTuningJobRequest),
            ("CancelFineTuningJob", J.CancelFineTuningJobRequest),
            ("PauseFineTuningJob", J.PauseFineTuningJobRequest),
            ("ResumeFineTuningJob", J.ResumeFineTuningJobRequest),
            ("ListFineTuningEvents", J.ListFineTuningEventsRequest),
            ("ListFineTuningCheckpoints", J.ListFineTuningCheckpointsRequest),
        ]
    },
    "/tunegate.v1.FineTuning/WatchFineTuningJob": lambda w: [RpcAttempt(_watch(j)) for j in w.jobs],
    "/tunegate.v1.ChatCompletions/CreateChatCompletion": lambda w: [
        RpcAttempt(_chat_call(w.model, False)),
        RpcAttempt(_chat_call(w.checkpoint_model, False)),
    ],
    "/tunegate.v1.ChatCompletions/StreamChatCompletion": lambda w: [
        RpcAttempt(_chat_call(w.model, True)),
        RpcAttempt(_chat_call(w.checkpoint_model, True)),
    ],
    "/tunegate.v1.Models/ListModels": lambda w: [
        RpcAttempt(
            _unary(models_pb2_grpc.ModelsStub, "ListModels", models_pb2.ListModelsRequest()),
            touches_a=False,
            allowed=RPC_OK,
        )
    ],
    "/tunegate.v1.ApiKeys/CreateApiKey": lambda w: [
        RpcAttempt(
            _unary(Keys, "CreateApiKey", A.CreateApiKeyRequest(tenant="b", name="x")),
            touches_a=False,
            allowed=RPC_FORBIDDEN,
        )
    ],
    "/tunegate.v1.ApiKeys/ListApiKeys": lambda w: [
        RpcAttempt(
            _unary(Keys, "ListApiKeys", A.ListApiKeysRequest()), touches_a=False, allowed=RPC_FORBIDDEN
        )
    ],
    "/tunegate.v1.ApiKeys/RevokeApiKey": lambda w: [
        RpcAttempt(
            _unary(Keys, "RevokeApiKey", A.RevokeApiKeyRequest(id="0123456789ab")),
            touches_a=False,
            allowed=RPC_FORBIDDEN,
        )
    ],
    "/tunegate.v1.VirtualKeys/CreateVirtualKey": lambda w: [
        RpcAttempt(
            _unary(
                VKeys,
                "CreateVirtualKey",
                A.CreateVirtualKeyRequest(slug="b-grpc", provider="openai", key="sk-b-grpc-key"),
            ),
            touches_a=False,
            allowed=RPC_OK | RPC_REFUSED,
        )
    ],
    "/tunegate.v1.VirtualKeys/ListVirtualKeys": lambda w: [
        RpcAttempt(
            _unary(VKeys, "ListVirtualKeys", A.ListVirtualKeysRequest()), touches_a=False, allowed=RPC_OK
        )
    ],
    "/tunegate.v1.VirtualKeys/GetVirtualKey": lambda w: [
        RpcAttempt(_unary(VKeys, "GetVirtualKey", A.GetVirtualKeyRequest(slug=w.virtual_key)))
    ],
    "/tunegate.v1.VirtualKeys/UpdateVirtualKey": lambda w: [
        RpcAttempt(
            _unary(
                VKeys,
                "UpdateVirtualKey",
                A.UpdateVirtualKeyRequest(slug=w.virtual_key, provider="openai", key="sk-stolen"),
            )
        )
    ],
    "/tunegate.v1.VirtualKeys/DeleteVirtualKey": lambda w: [
        RpcAttempt(_unary(VKeys, "DeleteVirtualKey", A.DeleteVirtualKeyRequest(slug=w.virtual_key)))
    ],
    "/tunegate.v1.Models/GetModel": lambda w: [
        RpcAttempt(_unary(models_pb2_grpc.ModelsStub, "GetModel", models_pb2.GetModelRequest(model=m)))
        for m in (w.model, w.checkpoint_model)
    ],
    "/tunegate.v1.WebhookEndpoints/CreateWebhookEndpoint": lambda w: [
        RpcAttempt(
            _unary(
                Hooks,
                "CreateWebhookEndpoint",
                W.CreateWebhookEndpointRequest(url="https://hooks.example.com/other"),
            ),
            touches_a=False,
            allowed=RPC_OK,
        )
    ],
    "/tunegate.v1.WebhookEndpoints/ListWebhookEndpoints": lambda w: [
        RpcAttempt(
            _unary(Hooks, "ListWebhookEndpoints", W.ListWebhookEndpointsRequest()),
            touches_a=False,
            allowed=RPC_OK,
        )
    ],
    "/tunegate.v1.WebhookEndpoints/GetWebhookEndpoint": lambda w: [
        RpcAttempt(_unary(Hooks, "GetWebhookEndpoint", W.GetWebhookEndpointRequest(id=w.webhook_endpoint)))
    ],
    "/tunegate.v1.WebhookEndpoints/DeleteWebhookEndpoint": lambda w: [
        RpcAttempt(
            _unary(Hooks, "DeleteWebhookEndpoint", W.DeleteWebhookEndpointRequest(id=w.webhook_endpoint))
        )
    ],
}


def grpc_callers(world: World) -> list[tuple[str, Metadata, str | None]]:
    other = "sk-ownerB-" + secrets.token_hex(8)
    a_bearer = ("authorization", f"Bearer {world.token}")
    return [
        ("owner B (Bearer)", (("authorization", f"Bearer {other}"),), None),
        ("owner B (api-key)", (("api-key", other),), None),
        ("tenant with A's token as gateway key", (("x-portkey-api-key", world.token),), None),
        ("tenant B next to A's Bearer", (("x-portkey-api-key", "pk-tenantB"), a_bearer), None),
        ("anonymous", (), None),
        (
            "unreadable authorization-bin",
            (("authorization-bin", f"Bearer {world.token}".encode()),),
            "authorization",
        ),
        (
            "unreadable x-portkey-api-key-bin + A's Bearer",
            (("x-portkey-api-key-bin", b"pk-1"), a_bearer),
            "x-portkey-api-key",
        ),
        ("unreadable api-key-bin", (("api-key-bin", world.token.encode()),), "api-key"),
        (
            "unreadable x-portkey-virtual-key-bin + A's Bearer",
            (("x-portkey-virtual-key-bin", b"vk-1"), a_bearer),
            "x-portkey-virtual-key",
        ),
    ]


def _bad_request_fields(err: grpc.Call) -> list[str]:
    status = rpc_status.from_call(err)
    fields: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def _serialized(reply: Any) -> bytes:
    if isinstance(reply, list):
        return b"".join(_serialized(r) for r in reply)
    return cast(Message, reply).SerializeToString()


def test_grpc_ownership_sweep(world: World) -> None:
    assert grpc_methods() <= set(GRPC_CASES), f"RPCs without a sweep case: {grpc_methods() - set(GRPC_CASES)}"
    callers = grpc_callers(world)
    attempts = cross_owner_reads = 0
    unexpected: list[str] = []
    with grpc.insecure_channel(world.gateway.grpc_target) as channel:
        for label, metadata, refused_for in callers:
            for method in sorted(GRPC_CASES):
                for attempt in GRPC_CASES[method](world):
                    attempts += 1
                    try:
                        reply = attempt.call(channel, metadata)
                    except grpc.RpcError as raised:
                        err = cast(grpc.Call, raised)
                        code, answer, fields = (
                            err.code(),
                            (err.details() or "").encode(),
                            _bad_request_fields(err),
                        )
                    else:
                        code, answer, fields = grpc.StatusCode.OK, _serialized(reply), []
                    where = f"{label}: {method} -> {code.name} {answer[:200]!r}"
                    leaked = (
                        [i for i in world.ids if i.encode() in answer] if code is grpc.StatusCode.OK else []
                    )
                    if code is grpc.StatusCode.OK and (attempt.touches_a or leaked):
                        cross_owner_reads += 1
                        unexpected.append("CROSS-OWNER READ " + where)
                    elif refused_for is not None:
                        if code is not grpc.StatusCode.INVALID_ARGUMENT or fields != [refused_for]:
                            unexpected.append(where)
                    elif code not in attempt.allowed:
                        unexpected.append(where)
    SUMMARY["grpc"] = {
        "rpcs": len(GRPC_CASES),
        "callers": len(callers),
        "attempts": attempts,
        "cross_owner_reads": cross_owner_reads,
        "unexpected": len(unexpected),
    }
    print(f"\ngRPC ownership sweep: {SUMMARY['grpc']}")
    assert unexpected == [], "\n".join(unexpected)
    assert cross_owner_reads == 0
    assert attempts >= len(GRPC_CASES) * len(callers)
    assert_unchanged(world)


def test_afterwards_owner_a_is_unchanged(world: World) -> None:
    """After both sweeps (this runs last): no cross-owner read was counted, A's resources are
    as they were, and A's pending upload is still pending — completing it now works and
    assembles only A's own part."""
    for surface, counts in SUMMARY.items():
        print(f"{surface}: {counts}")
        assert counts["cross_owner_reads"] == 0 and counts["unexpected"] == 0
    assert_unchanged(world)
    client = openai_client(world.gateway.base_url, world.token, max_retries=0)
    completed = client.uploads.complete(world.pending_upload, part_ids=[world.pending_part])
    assert completed.status == "completed" and completed.file is not None
    assert client.files.content(completed.file.id).read() == world.pending_bytes
