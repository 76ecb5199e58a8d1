"""The OpenAPI 3.1 document of the REST surface, generated from the contract.

Sans-IO: the route table (``build_routes``: the ``google.api.http`` annotations, as the edge
serves them) and the codec's schemas (``tunegate.openai_json.SchemaSet``: how each message is
written and read as OpenAI JSON) in, one JSON document out. What the annotations leave to the
edge is described from the edge's own modules: multipart uploads (``_upload``), raw downloads and
server-sent events (``_download``, ``_sse``, ``(streamed_by)``), pass-through bodies
(``_passthrough``), ``(from_header)`` headers and the error envelope (``_errors``).

For each route:

* a JSON route (``body: "*"``) takes its request message (input rules) minus the fields the path
  binds, as ``application/json``; a route filled from the path and query takes each other field
  as a query parameter; a client-streaming route takes ``multipart/form-data``: the metadata
  message's fields as text fields and the ``(multipart_part)`` as the file;
* a unary answer is its response message (output rules); a server-streaming ``HttpBody`` answer is
  raw bytes; a ``(streamed_by)`` route also answers ``text/event-stream`` (with the query's
  ``stream=true``, or the body's ``"stream": true`` on a pass-through route);
* every answer carries ``x-request-id``; every failure is the one error envelope (``default``).

The document is generated at build time, with the proto files' comments as descriptions
(``make proto`` runs ``tunegate openapi --proto proto --include third_party --out
edge/tunegate/edge/openapi.json``), committed as ``openapi.json`` beside this module, and served
as it is by the edge at ``GET /openapi.json``; a test regenerates it and fails when the committed
one is stale.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor
from tunegate.edge._errors import ERROR_HEADERS, ERROR_SCHEMA
from tunegate.edge._headers import REQUEST_ID
from tunegate.edge._routes import Cardinality, Route, build_routes
from tunegate.edge._sse import STREAM_PARAM, event_types
from tunegate.edge._upload import PART_FIELDS
from tunegate.openai_json import Direction, SchemaSet, message_types
from tunegate.openai_json import _options as opts

__all__ = ["OPENAPI_PATH", "document_bytes", "openapi_document", "proto_comments", "served_document"]

OPENAPI_PATH = "/openapi.json"
"""Where the edge serves the document."""

_ERROR = "ErrorResponse"
_SERVER = "http://127.0.0.1:8787"
_DESCRIPTION = """\
tunegate's REST surface: OpenAI's paths for files, uploads, fine-tuning jobs, chat completions and
models (plus the gateway's own webhook endpoints and admin API), generated from the protobuf
contract (`proto/tunegate/v1`) and the edge's JSON rules. Keys are the proto field names; every
integer (int64 included) is a JSON number; enums are OpenAI's spellings; a key OpenAI sends as
`null` is present with `null`; optional request keys may also be `null` (unset).

Provider routing follows Portkey's headers (`x-portkey-provider` with `Authorization: Bearer
<provider key>`, `x-portkey-virtual-key`, `x-portkey-config`, `x-portkey-azure-*`,
`x-portkey-aws-*`, …; see the README); `x-portkey-api-key` is a gateway key. Every answer
carries `x-request-id` (the caller's, when sane); every error is `{"error": {message, type,
param, code}}` with `x-should-retry`."""


def openapi_document(
    routes: Sequence[Route] | None = None, *, comments: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (the edge's route table by default).

    ``comments``: proto comments by descriptor full name (`proto_comments`), for descriptions.
    Raises ValueError for a contract the document cannot describe (two schemas or operations
    with the same name, a field type without a JSON schema)."""
    routes = build_routes() if routes is None else tuple(routes)
    docs = dict(comments or {})
    inputs, outputs = _roots(routes)
    schemas = SchemaSet(
        both=message_types(inputs) & message_types(outputs), describe=lambda n: docs.get(n, "")
    )
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for route in routes:
        operation = _operation(route, schemas)
        if operation["operationId"] in operation_ids:
            raise ValueError(f"two operations are named {operation['operationId']!r}")
        operation_ids.add(operation["operationId"])
        paths.setdefault(route.path, {})[route.verb.lower()] = operation
    components: dict[str, Any] = {
        "schemas": {**schemas.components, _ERROR: dict(ERROR_SCHEMA)},
        "responses": {"Error": _error_response()},
        "headers": {
            REQUEST_ID: {"description": "The request's id, on every answer.", "schema": {"type": "string"}},
            **{
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in ERROR_HEADERS.items()
            },
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A provider's key (with `x-portkey-provider`), or a gateway key.",
            },
            "gatewayKey": {"type": "apiKey", "in": "header", "name": "x-portkey-api-key"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tunegate",
            "version": _version(routes),
            "description": _DESCRIPTION,
        },
        "servers": [{"url": _SERVER, "description": "`tunegate run` on this machine"}],
        "security": [{"bearer": []}, {"gatewayKey": []}, {}],
        "tags": [{"name": tag} for tag in dict.fromkeys(_service(route) for route in routes)],
        "paths": paths,
        "components": components,
    }


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """The document as committed and served: indented JSON, UTF-8, a final newline."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def served_document() -> bytes:
    """The committed document (``openapi.json`` in this package), as the edge serves it."""
    return importlib.resources.files("tunegate.edge").joinpath("openapi.json").read_bytes()


# ---------------------------------------------------------------------------------- operations


def _operation(route: Route, schemas: SchemaSet) -> dict[str, Any]:
    service, method = route.method_path.strip("/").split("/")
    text = schemas.describe(f"{service}.{method}")
    operation: dict[str, Any] = {
        "operationId": method[0].lower() + method[1:],
        "tags": [_service(route)],
        "summary": _words(method),
    }
    if text:
        operation["description"] = text
    request = (
        opts.descriptor_of(route.upload.metadata_cls)
        if route.upload
        else opts.descriptor_of(route.request_cls)
    )
    parameters = [_path_parameter(request, name, schemas) for name in route.path_fields]
    parameters += _query_parameters(route, schemas) + _header_parameters(request)
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(route, schemas)
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = {
        "200": _answer(route, schemas),
        "default": {"$ref": "#/components/responses/Error"},
    }
    return operation


def _path_parameter(request: Descriptor, name: str, schemas: SchemaSet) -> dict[str, Any]:
    field = request.fields_by_name[name]
    parameter = {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schemas.field(field, Direction.INPUT),
    }
    return _with_description(parameter, schemas.describe(field.full_name))


def _query_parameters(route: Route, schemas: SchemaSet) -> list[dict[str, Any]]:
    if route.body != "" or route.cardinality is not Cardinality.UNARY:
        return []
    requests = [opts.descriptor_of(route.request_cls)]
    if route.streamed_request_cls is not None:
        requests.append(opts.descriptor_of(route.streamed_request_cls))
    parameters: dict[str, dict[str, Any]] = {}
    for request in requests:
        for field in opts.fields_of(request):
            if field.name in route.path_fields or field.name in parameters:
                continue
            schema, serialization = schemas.text(field)
            parameter = {"name": field.name, "in": "query", "required": opts.is_required(field)}
            parameter.update(schema=schema, **serialization)
            parameters[field.name] = _with_description(parameter, schemas.describe(field.full_name))
    if route.streams_by_query:
        streamed = route.streamed_by.rsplit("/", 1)[-1] if route.streamed_by else ""
        parameters[STREAM_PARAM] = {
            "name": STREAM_PARAM,
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": f"`true`: answer with server-sent events from `{streamed}` instead of the "
            "list (`after` resumes after an event already seen; `limit` does not apply).",
        }
    return list(parameters.values())


def _header_parameters(request: Descriptor) -> list[dict[str, Any]]:
    return [
        {
            "name": header,
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": f"Sets `{field}` when the body leaves it empty.",
        }
        for field, header in opts.header_fields(request)
    ]


def _request_body(route: Route, schemas: SchemaSet) -> dict[str, Any] | None:
    if route.upload is not None:
        metadata = opts.descriptor_of(route.upload.metadata_cls)
        omit = (*route.path_fields, *PART_FIELDS)
        schema, encoding = schemas.form(metadata, part=route.upload.part, omit=omit)
        media: dict[str, Any] = {"schema": schema}
        if encoding:
            media["encoding"] = encoding
        return {"required": True, "content": {"multipart/form-data": media}}
    request = opts.descriptor_of(route.request_cls)
    if route.passes_body:
        schema = schemas.document(request, request.fields_by_name[route.body])
        return {"required": True, "content": {"application/json": {"schema": schema}}}
    if route.body != "*":
        return None
    if not [field for field in opts.fields_of(request) if field.name not in route.path_fields]:
        return None  # the body may be empty or `{}`: nothing to describe
    required = any(opts.is_required(field) for field in opts.fields_of(request))
    schema = schemas.message(request, Direction.INPUT, omit=route.path_fields)
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _answer(route: Route, schemas: SchemaSet) -> dict[str, Any]:
    headers = {REQUEST_ID: {"$ref": f"#/components/headers/{REQUEST_ID}"}}
    response = opts.descriptor_of(route.response_cls)
    if route.passes_body:
        content: dict[str, Any] = {
            "application/json": {"schema": {"type": "object", "description": "The answer, as sent."}}
        }
        if route.streamed_by is not None:
            content["text/event-stream"] = {
                "schema": {"type": "object", "description": "Each event's data, as sent; then `[DONE]`."}
            }
        return {"description": "The answer, as the provider sent it.", "headers": headers, "content": content}
    if route.cardinality is Cardinality.SERVER_STREAMING:
        raw = {"schema": {"type": "string", "format": "binary"}}
        return {
            "description": "The bytes, with their own Content-Type.",
            "headers": headers,
            "content": {"*/*": raw},
        }
    content = {"application/json": {"schema": schemas.message(response, Direction.OUTPUT)}}
    if route.streamed_response_cls is not None:
        events = [
            schemas.message(kind, Direction.OUTPUT)
            for kind in event_types(opts.descriptor_of(route.streamed_response_cls))
        ]
        content["text/event-stream"] = {
            "schema": {
                "oneOf": [*events, {"$ref": f"#/components/schemas/{_ERROR}"}],
                "description": f"With `{STREAM_PARAM}=true`: each event is `data: <one of these>`; "
                "`data: [DONE]` ends a stream that went well, an error event one that failed.",
            }
        }
    return {"description": "OK", "headers": headers, "content": content}


def _error_response() -> dict[str, Any]:
    headers = {name: {"$ref": f"#/components/headers/{name}"} for name in (REQUEST_ID, *ERROR_HEADERS)}
    return {
        "description": "A failure, as OpenAI's error envelope.",
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{_ERROR}"}}},
    }


def _roots(routes: Sequence[Route]) -> tuple[list[Descriptor], list[Descriptor]]:
    """The message types the document reads (requests) and writes (answers, events)."""
    inputs: list[Descriptor] = []
    outputs: list[Descriptor] = []
    for route in routes:
        inputs.append(
            opts.descriptor_of(route.upload.metadata_cls)
            if route.upload
            else opts.descriptor_of(route.request_cls)
        )
        if route.streamed_request_cls is not None:
            inputs.append(opts.descriptor_of(route.streamed_request_cls))
        outputs.append(opts.descriptor_of(route.response_cls))
        if route.streamed_response_cls is not None:
            outputs.extend(event_types(opts.descriptor_of(route.streamed_response_cls)))
    return inputs, outputs


def _service(route: Route) -> str:
    return route.method_path.strip("/").split("/")[0].rsplit(".", 1)[-1]


def _version(routes: Sequence[Route]) -> str:
    packages = {route.method_path.strip("/").split("/")[0].rsplit(".", 2)[-2] for route in routes}
    return ",".join(sorted(packages))


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).capitalize()


def _with_description(item: dict[str, Any], text: str) -> dict[str, Any]:
    return {**item, "description": text} if text else item


# ---------------------------------------------------------------------------------- comments


def proto_comments(proto_dir: Path, includes: Sequence[Path] = ()) -> dict[str, str]:
    """The leading comments of every service, method, message, field, enum and enum value of the
    ``.proto`` files under ``proto_dir``, by full name. Compiles them with grpc_tools' protoc
    (a development dependency), which keeps the comments the generated modules drop."""
    import grpc_tools

    files = sorted(str(path.relative_to(proto_dir)) for path in proto_dir.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "descriptors.pb"
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}"]
        command += [f"-I{path}" for path in (*includes, well_known)]
        command += ["--include_source_info", f"--descriptor_set_out={out}", *files]
        subprocess.run(command, check=True, capture_output=True)
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    comments: dict[str, str] = {}
    for file in descriptors.file:
        _collect(file, comments)
    return comments


def _collect(file: descriptor_pb2.FileDescriptorProto, comments: dict[str, str]) -> None:
    # Source locations are paths of field numbers into the FileDescriptorProto:
    # 4 message_type, 5 enum_type, 6 service; in a message 2 field, 3 nested_type, 4 enum_type;
    # in an enum 2 value; in a service 2 method.
    by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
    names: dict[tuple[int, ...], str] = {}

    def message(proto: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str) -> None:
        name = f"{prefix}.{proto.name}"
        names[path] = name
        for i, field in enumerate(proto.field):
            names[(*path, 2, i)] = f"{name}.{field.name}"
        for i, nested in enumerate(proto.nested_type):
            message(nested, (*path, 3, i), name)
        for i, kind in enumerate(proto.enum_type):
            enumeration(kind, (*path, 4, i), name)

    def enumeration(proto: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str) -> None:
        names[path] = f"{prefix}.{proto.name}"
        for i, value in enumerate(proto.value):
            names[(*path, 2, i)] = f"{prefix}.{value.name}"

    for i, proto in enumerate(file.message_type):
        message(proto, (4, i), file.package)
    for i, kind in enumerate(file.enum_type):
        enumeration(kind, (5, i), file.package)
    for i, service in enumerate(file.service):
        names[(6, i)] = f"{file.package}.{service.name}"
        for j, method in enumerate(service.method):
            names[(6, i, 2, j)] = f"{file.package}.{service.name}.{method.name}"
    for path, name in names.items():
        text = _clean(by_path.get(path, ""))
        if text:
            comments[name] = text


def _clean(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.splitlines()]
    lines = [line for line in lines if not line.startswith("buf:lint:")]
    return "\n".join(lines).strip()
