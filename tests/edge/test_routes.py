"""tunegate.edge._routes: the route table built from the google.api.http annotations."""

from __future__ import annotations

import itertools

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from tunegate.edge import Cardinality, RouteError, build_routes, default_services
from tunegate.v1 import files_pb2, options_pb2, uploads_pb2

EXPECTED = {
    ("POST", "/v1/chat/completions"): (
        "/tunegate.v1.ChatCompletions/CreateChatCompletion",
        Cardinality.UNARY,
    ),
    ("POST", "/v1/files"): ("/tunegate.v1.Files/CreateFile", Cardinality.CLIENT_STREAMING),
    ("GET", "/v1/files"): ("/tunegate.v1.Files/ListFiles", Cardinality.UNARY),
    ("GET", "/v1/files/{file_id}"): ("/tunegate.v1.Files/GetFile", Cardinality.UNARY),
    ("DELETE", "/v1/files/{file_id}"): ("/tunegate.v1.Files/DeleteFile", Cardinality.UNARY),
    ("GET", "/v1/files/{file_id}/content"): (
        "/tunegate.v1.Files/GetFileContent",
        Cardinality.SERVER_STREAMING,
    ),
    ("POST", "/v1/uploads"): ("/tunegate.v1.Uploads/CreateUpload", Cardinality.UNARY),
    ("POST", "/v1/uploads/{upload_id}/parts"): (
        "/tunegate.v1.Uploads/AddUploadPart",
        Cardinality.CLIENT_STREAMING,
    ),
    ("POST", "/v1/uploads/{upload_id}/complete"): ("/tunegate.v1.Uploads/CompleteUpload", Cardinality.UNARY),
    ("POST", "/v1/uploads/{upload_id}/cancel"): ("/tunegate.v1.Uploads/CancelUpload", Cardinality.UNARY),
    ("POST", "/v1/fine_tuning/jobs"): ("/tunegate.v1.FineTuning/CreateFineTuningJob", Cardinality.UNARY),
    ("GET", "/v1/fine_tuning/jobs"): ("/tunegate.v1.FineTuning/ListFineTuningJobs", Cardinality.UNARY),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"): (
        "/tunegate.v1.FineTuning/GetFineTuningJob",
        Cardinality.UNARY,
    ),
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"): (
        "/tunegate.v1.FineTuning/CancelFineTuningJob",
        Cardinality.UNARY,
    ),
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/pause"): (
        "/tunegate.v1.FineTuning/PauseFineTuningJob",
        Cardinality.UNARY,
    ),
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/resume"): (
        "/tunegate.v1.FineTuning/ResumeFineTuningJob",
        Cardinality.UNARY,
    ),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"): (
        "/tunegate.v1.FineTuning/ListFineTuningEvents",
        Cardinality.UNARY,
    ),
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"): (
        "/tunegate.v1.FineTuning/ListFineTuningCheckpoints",
        Cardinality.UNARY,
    ),
    ("GET", "/v1/models"): ("/tunegate.v1.Models/ListModels", Cardinality.UNARY),
    ("GET", "/v1/models/{model}"): ("/tunegate.v1.Models/GetModel", Cardinality.UNARY),
    ("POST", "/v1/api-keys"): ("/tunegate.v1.ApiKeys/CreateApiKey", Cardinality.UNARY),
    ("GET", "/v1/api-keys"): ("/tunegate.v1.ApiKeys/ListApiKeys", Cardinality.UNARY),
    ("DELETE", "/v1/api-keys/{id}"): ("/tunegate.v1.ApiKeys/RevokeApiKey", Cardinality.UNARY),
    ("POST", "/v1/virtual-keys"): ("/tunegate.v1.VirtualKeys/CreateVirtualKey", Cardinality.UNARY),
    ("GET", "/v1/virtual-keys"): ("/tunegate.v1.VirtualKeys/ListVirtualKeys", Cardinality.UNARY),
    ("GET", "/v1/virtual-keys/{slug}"): ("/tunegate.v1.VirtualKeys/GetVirtualKey", Cardinality.UNARY),
    ("PUT", "/v1/virtual-keys/{slug}"): ("/tunegate.v1.VirtualKeys/UpdateVirtualKey", Cardinality.UNARY),
    ("DELETE", "/v1/virtual-keys/{slug}"): ("/tunegate.v1.VirtualKeys/DeleteVirtualKey", Cardinality.UNARY),
    # The gateway's own admin surface (OpenAI has no such path): webhook endpoints.
    ("POST", "/v1/webhook-endpoints"): (
        "/tunegate.v1.WebhookEndpoints/CreateWebhookEndpoint",
        Cardinality.UNARY,
    ),
    ("GET", "/v1/webhook-endpoints"): (
        "/tunegate.v1.WebhookEndpoints/ListWebhookEndpoints",
        Cardinality.UNARY,
    ),
    ("GET", "/v1/webhook-endpoints/{id}"): (
        "/tunegate.v1.WebhookEndpoints/GetWebhookEndpoint",
        Cardinality.UNARY,
    ),
    ("DELETE", "/v1/webhook-endpoints/{id}"): (
        "/tunegate.v1.WebhookEndpoints/DeleteWebhookEndpoint",
        Cardinality.UNARY,
    ),
}


def test_routes_are_openais_paths() -> None:
    table = {(r.verb, r.path): (r.method_path, r.cardinality) for r in build_routes()}
    assert table == EXPECTED


def test_every_annotated_method_has_a_route_and_every_route_an_annotation() -> None:
    built = build_routes()
    routes = {r.method_path for r in built}
    streamed = {r.streamed_by for r in built if r.streamed_by}
    annotated = set()
    for service in default_services():
        for method in service.methods:
            if f"/{service.full_name}/{method.name}" in streamed:
                continue  # reached through its unary twin's route
            assert method.GetOptions().HasExtension(annotations_pb2.http), method.full_name
            annotated.add(f"/{service.full_name}/{method.name}")
    assert routes == annotated


def test_route_details() -> None:
    by_method = {r.method_path: r for r in build_routes()}
    get = by_method["/tunegate.v1.Files/GetFile"]
    assert get.path_fields == ("file_id",) and get.body == ""
    assert get.request_cls().DESCRIPTOR.full_name == "tunegate.v1.GetFileRequest"
    cancel = by_method["/tunegate.v1.FineTuning/CancelFineTuningJob"]
    assert cancel.body == "*" and cancel.path_fields == ("fine_tuning_job_id",)
    create = by_method["/tunegate.v1.Files/CreateFile"]
    assert create.upload is not None
    assert (create.upload.metadata_field, create.upload.chunk_field, create.upload.part) == (
        "metadata",
        "chunk",
        "file",
    )
    assert create.upload.metadata_cls is files_pb2.FileMetadata or (
        create.upload.metadata_cls.DESCRIPTOR.full_name == "tunegate.v1.FileMetadata"
    )
    chat = by_method["/tunegate.v1.ChatCompletions/CreateChatCompletion"]
    assert chat.passes_body and chat.body == "body"
    assert chat.streamed_by == "/tunegate.v1.ChatCompletions/StreamChatCompletion"
    assert not get.passes_body and not cancel.passes_body and get.streamed_by is None
    assert not chat.streams_by_query and not get.streams_by_query
    events = by_method["/tunegate.v1.FineTuning/ListFineTuningEvents"]
    assert events.streams_by_query and events.cardinality is Cardinality.UNARY
    assert events.streamed_by == "/tunegate.v1.FineTuning/WatchFineTuningJob"
    assert events.streamed_request_cls is not None and events.streamed_response_cls is not None
    assert events.streamed_request_cls.DESCRIPTOR.full_name == "tunegate.v1.WatchFineTuningJobRequest"
    assert events.streamed_response_cls.DESCRIPTOR.full_name == "tunegate.v1.FineTuningJobUpdate"
    parts = by_method["/tunegate.v1.Uploads/AddUploadPart"]
    assert parts.upload is not None and parts.upload.part == "data" and parts.path_fields == ("upload_id",)
    assert (
        parts.upload.metadata_cls.DESCRIPTOR.full_name == uploads_pb2.UploadPartMetadata.DESCRIPTOR.full_name
    )


_counter = itertools.count()


def _service_with(path: str, *, body: str = "", stream_out: bool = False) -> ServiceDescriptor:
    """A throwaway service (unique package, default pool) whose one method is `get: path`."""
    name = f"routetest{next(_counter)}"
    f = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package=name, syntax="proto3")
    f.dependency.append("google/api/annotations.proto")
    msg = f.message_type.add(name="Req")
    msg.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    msg.field.add(
        name="tags",
        number=2,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    method = f.service.add(name="S").method.add(
        name="M", input_type=f".{name}.Req", output_type=f".{name}.Req"
    )
    method.server_streaming = stream_out
    rule = method.options.Extensions[annotations_pb2.http]
    rule.get = path
    rule.body = body
    pool = descriptor_pool.Default()
    pool.Add(f)
    return pool.FindServiceByName(f"{name}.S")


@pytest.mark.parametrize(
    ("path", "body", "stream_out"),
    [
        ("/v1/things/{id=things/*}", "", False),
        ("/v1/things/*", "", False),
        ("/v1/things/{id}:cancel", "", False),
        ("/v1/things/{missing}", "", False),
        ("/v1/things/{tags}", "", False),
        ("/v1/things", "id", False),
        ("/v1/things/{id}", "", True),  # server streaming that is not HttpBody
    ],
)
def test_unservable_annotations_fail_loudly(path: str, body: str, stream_out: bool) -> None:
    service = _service_with(path, body=body, stream_out=stream_out)
    with pytest.raises(RouteError):
        build_routes([service])


def test_a_plain_template_is_accepted() -> None:
    routes = build_routes([_service_with("/v1/things/{id}")])
    assert [(r.verb, r.path, r.path_fields) for r in routes] == [("GET", "/v1/things/{id}", ("id",))]


def _passthrough_service(
    *, body_type: str = ".google.api.HttpBody", returns: str = ".google.api.HttpBody", streamed_by: str = ""
) -> ServiceDescriptor:
    """A throwaway service: `M` (POST /v1/things, body: "body") and `S`, server-streaming HttpBody."""
    name = f"routetest{next(_counter)}"
    f = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package=name, syntax="proto3")
    f.dependency.extend(
        ["google/api/annotations.proto", "google/api/httpbody.proto", "tunegate/v1/options.proto"]
    )
    msg = f.message_type.add(name="Req")
    msg.field.add(name="model", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    msg.field.add(
        name="body", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, type_name=body_type
    )
    service = f.service.add(name="S")
    method = service.method.add(name="M", input_type=f".{name}.Req", output_type=returns)
    rule = method.options.Extensions[annotations_pb2.http]
    rule.post = "/v1/things"
    rule.body = "body"
    if streamed_by:
        method.options.Extensions[options_pb2.streamed_by] = streamed_by
    stream = service.method.add(name="Stream", input_type=f".{name}.Req", output_type=".google.api.HttpBody")
    stream.server_streaming = True
    pool = descriptor_pool.Default()
    pool.Add(f)
    return pool.FindServiceByName(f"{name}.S")


def test_a_pass_through_route_names_its_streaming_twin() -> None:
    (route,) = build_routes([_passthrough_service(streamed_by="Stream")])
    assert route.passes_body and route.cardinality is Cardinality.UNARY
    assert route.streamed_by is not None and route.streamed_by.endswith(".S/Stream")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"body_type": ".google.protobuf.Struct"},  # a named body that is not HttpBody
        {"returns": ".google.protobuf.Struct"},  # a pass-through answer that is not HttpBody
        {"streamed_by": "Missing"},
        {"streamed_by": "M"},  # not server-streaming
    ],
)
def test_unservable_pass_through_routes_fail_loudly(kwargs: dict[str, str]) -> None:
    with pytest.raises(RouteError):
        build_routes([_passthrough_service(**kwargs)])


def _query_service(
    *, streamed_by: str = "Watch", verb: str = "get", body: str = "", watch_field: str = "thing_id"
) -> ServiceDescriptor:
    """A throwaway service: `M` (GET /v1/things/{thing_id}/events, from the query) and `Watch`,
    server-streaming `Update` from a request holding `watch_field`."""
    name = f"routetest{next(_counter)}"
    f = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package=name, syntax="proto3")
    f.dependency.extend(["google/api/annotations.proto", "tunegate/v1/options.proto"])
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    req = f.message_type.add(name="Req")
    req.field.add(name="thing_id", number=1, type=string)
    req.field.add(name="after", number=2, type=string)
    watch = f.message_type.add(name="WatchReq")
    watch.field.add(name=watch_field, number=1, type=string)
    f.message_type.add(name="Update").field.add(name="text", number=1, type=string)
    service = f.service.add(name="S")
    method = service.method.add(name="M", input_type=f".{name}.Req", output_type=f".{name}.Update")
    rule = method.options.Extensions[annotations_pb2.http]
    setattr(rule, verb, "/v1/things/{thing_id}/events")
    rule.body = body
    method.options.Extensions[options_pb2.streamed_by] = streamed_by
    stream = service.method.add(name="Watch", input_type=f".{name}.WatchReq", output_type=f".{name}.Update")
    stream.server_streaming = True
    service.method.add(name="Unary", input_type=f".{name}.WatchReq", output_type=f".{name}.Update")
    pool = descriptor_pool.Default()
    pool.Add(f)
    return pool.FindServiceByName(f"{name}.S")


def test_a_query_route_names_its_streaming_twin() -> None:
    (route,) = build_routes([_query_service()])
    assert route.streams_by_query and not route.passes_body and route.cardinality is Cardinality.UNARY
    assert route.streamed_by is not None and route.streamed_by.endswith(".S/Watch")
    assert route.streamed_request_cls is not None and route.streamed_response_cls is not None
    assert route.streamed_request_cls.DESCRIPTOR.name == "WatchReq"
    assert route.streamed_response_cls.DESCRIPTOR.name == "Update"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"streamed_by": "Missing"},
        {"streamed_by": "Unary"},  # not server-streaming
        {"watch_field": "other_id"},  # the stream's request lacks the path's field
        {"verb": "post", "body": "*"},  # a JSON body route has no query `stream`
    ],
)
def test_unservable_query_streams_fail_loudly(kwargs: dict[str, str]) -> None:
    with pytest.raises(RouteError):
        build_routes([_query_service(**kwargs)])
