"""The route table: ``google.api.http`` annotations of ``tunegate.v1`` → immutable ``Route`` specs.

Sans-IO: reads descriptors only. Built once at start-up; anything the edge cannot serve
faithfully (template syntax beyond literals and ``{field}``, a named ``body`` that is not a
``google.api.HttpBody`` field, ``response_body``, ``additional_bindings``, bidi streaming, a
streaming method of an unsupported shape, a ``streamed_by`` that does not name a fitting method)
raises ``RouteError`` so the edge refuses to start rather than serving a half-right route.

A ``body`` naming a ``google.api.HttpBody`` field (OpenAI's chat: ``body: "body"``) makes a
*pass-through* route: the request body travels as it was sent, in that field, and the unary
answer must be an ``HttpBody`` too, written as its bytes. Such a route may carry the
``(streamed_by)`` option: the server-streaming RPC, of the same service and request type,
answering ``stream google.api.HttpBody``, that serves a body whose ``stream`` is true.

A unary route filled from the path and query (``body`` empty) may carry ``(streamed_by)`` too:
the server-streaming RPC of the same service, whose request has every path field, that serves
a query with ``stream=true`` (its request built from the same path and query; its messages
become server-sent events: ``_sse``).
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from google.api import annotations_pb2, httpbody_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from tunegate.openai_json import _options as opts
from tunegate.v1 import (
    admin_pb2,
    chat_pb2,
    files_pb2,
    fine_tuning_pb2,
    models_pb2,
    options_pb2,
    uploads_pb2,
    webhooks_pb2,
)

__all__ = [
    "Cardinality",
    "Route",
    "RouteError",
    "UploadShape",
    "build_routes",
    "default_services",
]

logger = logging.getLogger("tunegate.edge")

_LITERAL = re.compile(r"[A-Za-z0-9._~-]+")
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_HTTP_BODY = httpbody_pb2.HttpBody.DESCRIPTOR.full_name


class RouteError(ValueError):
    """An annotation the edge cannot serve. Raised at start-up, never per request."""


class Cardinality(enum.Enum):
    """How an RPC's messages flow, which picks the edge handler."""

    UNARY = "unary"
    CLIENT_STREAMING = "client_streaming"
    SERVER_STREAMING = "server_streaming"


@dataclass(frozen=True, slots=True)
class UploadShape:
    """A client-streaming request ``oneof payload { <Metadata> metadata; bytes chunk; }``.

    ``part`` is the multipart part (``(multipart_part)``) whose bytes become ``chunk`` messages.
    """

    metadata_field: str
    chunk_field: str
    part: str
    metadata_cls: type[Message]


@dataclass(frozen=True, slots=True)
class Route:
    """One annotated RPC as the edge serves it."""

    verb: str
    """Upper-case HTTP method."""
    path: str
    """aiohttp path: literal segments and ``{field}`` variables."""
    path_fields: tuple[str, ...]
    """Top-level request fields bound by the path, in order."""
    body: str
    """``"*"`` (JSON body fills the request), ``""`` (query string fills it), or the name of
    the ``google.api.HttpBody`` field that carries the raw body (a pass-through route)."""
    cardinality: Cardinality
    method_path: str
    """Full gRPC method path, e.g. ``/tunegate.v1.Files/CreateFile``."""
    request_cls: type[Message]
    response_cls: type[Message]
    upload: UploadShape | None = None
    """For client-streaming routes: how multipart maps onto the request stream."""
    streamed_by: str | None = None
    """For a route with ``(streamed_by)``: the full gRPC method path of the server-streaming RPC
    serving a request that asks for a stream (the body's ``stream`` of a pass-through route,
    the query's ``stream`` of a query route)."""
    streamed_request_cls: type[Message] | None = None
    """With ``streamed_by``: that RPC's request message class."""
    streamed_response_cls: type[Message] | None = None
    """With ``streamed_by``: that RPC's response message class."""

    @property
    def passes_body(self) -> bool:
        """Whether the raw request body travels in the ``body`` field (an ``HttpBody``)."""
        return self.body not in ("", "*")

    @property
    def streams_by_query(self) -> bool:
        """Whether the query's ``stream=true`` picks ``streamed_by`` (a query route's stream)."""
        return self.streamed_by is not None and self.body == ""

    def __str__(self) -> str:
        return f"{self.verb:<6} {self.path:<55} {self.cardinality.value:<16} {self.method_path}"


def default_services() -> tuple[ServiceDescriptor, ...]:
    """The services the edge fronts: Files, Uploads, FineTuning, ChatCompletions, Models,
    WebhookEndpoints, and the admin API (ApiKeys, VirtualKeys)."""
    return (
        files_pb2.DESCRIPTOR.services_by_name["Files"],
        uploads_pb2.DESCRIPTOR.services_by_name["Uploads"],
        fine_tuning_pb2.DESCRIPTOR.services_by_name["FineTuning"],
        chat_pb2.DESCRIPTOR.services_by_name["ChatCompletions"],
        models_pb2.DESCRIPTOR.services_by_name["Models"],
        admin_pb2.DESCRIPTOR.services_by_name["ApiKeys"],
        admin_pb2.DESCRIPTOR.services_by_name["VirtualKeys"],
        webhooks_pb2.DESCRIPTOR.services_by_name["WebhookEndpoints"],
    )


def build_routes(services: Iterable[ServiceDescriptor] | None = None) -> tuple[Route, ...]:
    """Build one ``Route`` per annotated method; unannotated methods get none.

    Raises RouteError for an annotation the edge cannot serve, or two routes with the same
    verb and path.
    """
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for service in default_services() if services is None else services:
        for method in service.methods:
            route = _route_for(method)
            if route is None:
                continue
            key = (route.verb, route.path)
            if key in seen:
                raise RouteError(f"{method.full_name}: {route.verb} {route.path} is already routed")
            seen.add(key)
            routes.append(route)
    for route in routes:
        logger.debug("route %s", route)
    return tuple(routes)


def _route_for(method: MethodDescriptor) -> Route | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule = options.Extensions[annotations_pb2.http]
    where = method.full_name
    verb = rule.WhichOneof("pattern")
    if verb is None or verb == "custom":
        raise RouteError(f"{where}: only get/put/post/delete/patch patterns are supported")
    if rule.additional_bindings:
        raise RouteError(f"{where}: additional_bindings are not supported")
    if rule.response_body:
        raise RouteError(f"{where}: response_body is not supported")
    request = opts.input_of(method)
    if rule.body not in ("", "*"):
        _check_body_field(method, request, rule.body)

    template = str(getattr(rule, verb))
    path_fields = _parse_template(template, where)
    if not method.client_streaming:  # a stream binds path variables into its metadata message
        for name in path_fields:
            _check_path_field(request, name, where)

    cardinality, upload = _cardinality(method, path_fields)
    streaming = _streamed_by(method, body=rule.body, path_fields=path_fields)
    return Route(
        verb=verb.upper(),
        path=template,
        path_fields=path_fields,
        body=rule.body,
        cardinality=cardinality,
        method_path=_method_path(method),
        request_cls=message_factory.GetMessageClass(request),
        response_cls=message_factory.GetMessageClass(opts.output_of(method)),
        upload=upload,
        streamed_by=None if streaming is None else _method_path(streaming),
        streamed_request_cls=None if streaming is None else _request_class(streaming),
        streamed_response_cls=None if streaming is None else _response_class(streaming),
    )


def _method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _request_class(method: MethodDescriptor) -> type[Message]:
    return message_factory.GetMessageClass(opts.input_of(method))


def _response_class(method: MethodDescriptor) -> type[Message]:
    return message_factory.GetMessageClass(opts.output_of(method))


def _check_body_field(method: MethodDescriptor, request: Descriptor, name: str) -> None:
    where = method.full_name
    field = request.fields_by_name.get(name)
    message = field.message_type if field is not None else None
    if field is None or field.is_repeated or message is None or message.full_name != _HTTP_BODY:
        raise RouteError(f"{where}: body must be '*', empty, or a google.api.HttpBody field, not {name!r}")
    if method.client_streaming or method.server_streaming:
        raise RouteError(f"{where}: a pass-through body (body: {name!r}) needs a unary method")
    if opts.output_of(method).full_name != _HTTP_BODY:
        raise RouteError(f"{where}: a pass-through route must return google.api.HttpBody")


def _streamed_by(
    method: MethodDescriptor, *, body: str, path_fields: tuple[str, ...]
) -> MethodDescriptor | None:
    """The ``(streamed_by)`` method of ``method``, checked against the route's shape, or None."""
    name = method.GetOptions().Extensions[options_pb2.streamed_by]
    if not name:
        return None
    where = method.full_name
    service = method.containing_service
    streaming = service.methods_by_name.get(name)
    if body == "*":
        raise RouteError(
            f"{where}: (streamed_by) needs a pass-through body (a google.api.HttpBody field) "
            "or a route filled from the path and query"
        )
    if body:  # a pass-through route: the same request, a stream of HttpBody
        if (
            streaming is None
            or streaming.client_streaming
            or not streaming.server_streaming
            or opts.input_of(streaming).full_name != opts.input_of(method).full_name
            or opts.output_of(streaming).full_name != _HTTP_BODY
        ):
            raise RouteError(
                f"{where}: (streamed_by) {name!r} must name a method of {service.full_name} taking "
                f"{opts.input_of(method).full_name} and returning stream google.api.HttpBody"
            )
        return streaming
    if method.client_streaming or method.server_streaming:
        raise RouteError(f"{where}: (streamed_by) belongs on a unary method")
    if streaming is None or streaming.client_streaming or not streaming.server_streaming:
        raise RouteError(
            f"{where}: (streamed_by) {name!r} must name a server-streaming method of {service.full_name}"
        )
    for field in path_fields:  # the stream's request is built from the same path
        _check_path_field(opts.input_of(streaming), field, where)
    return streaming


def _parse_template(template: str, where: str) -> tuple[str, ...]:
    if not template.startswith("/") or template == "/":
        raise RouteError(f"{where}: path {template!r} must start with '/' and name a resource")
    fields: list[str] = []
    for segment in template[1:].split("/"):
        variable = _VARIABLE.fullmatch(segment)
        if variable is not None:
            fields.append(variable.group(1))
        elif _LITERAL.fullmatch(segment) is None:
            raise RouteError(
                f"{where}: path segment {segment!r} of {template!r} is not a literal or {{field}}"
            )
    if len(set(fields)) != len(fields):
        raise RouteError(f"{where}: {template!r} binds a field twice")
    return tuple(fields)


def _check_path_field(request: Descriptor, name: str, where: str) -> None:
    field = request.fields_by_name.get(name)
    if field is None:
        raise RouteError(f"{where}: path variable {{{name}}} is not a field of {request.full_name}")
    if field.is_repeated or field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_BYTES):
        raise RouteError(f"{where}: path variable {{{name}}} must be a non-repeated scalar")


def _cardinality(
    method: MethodDescriptor, path_fields: tuple[str, ...]
) -> tuple[Cardinality, UploadShape | None]:
    where = method.full_name
    if method.client_streaming and method.server_streaming:
        raise RouteError(f"{where}: bidirectional streaming has no HTTP mapping here")
    if method.server_streaming:
        if opts.output_of(method).full_name != _HTTP_BODY:
            raise RouteError(f"{where}: a server-streaming route must return stream google.api.HttpBody")
        return Cardinality.SERVER_STREAMING, None
    if method.client_streaming:
        return Cardinality.CLIENT_STREAMING, _upload_shape(method, path_fields)
    return Cardinality.UNARY, None


def _upload_shape(method: MethodDescriptor, path_fields: tuple[str, ...]) -> UploadShape:
    where = method.full_name
    request = opts.input_of(method)
    if len(request.oneofs) != 1:
        raise RouteError(f"{where}: a client-streaming request must be one oneof {{metadata; bytes chunk}}")
    members = list(request.oneofs[0].fields)
    chunks = [f for f in members if f.type == FieldDescriptor.TYPE_BYTES and opts.multipart_part(f)]
    metas = [f for f in members if f.type == FieldDescriptor.TYPE_MESSAGE]
    if len(members) != 2 or len(chunks) != 1 or len(metas) != 1:
        raise RouteError(
            f"{where}: the oneof must hold one metadata message and one bytes field with (multipart_part)"
        )
    metadata = opts.message_of(metas[0])
    for name in path_fields:
        _check_path_field(metadata, name, where)
    return UploadShape(
        metadata_field=metas[0].name,
        chunk_field=chunks[0].name,
        part=opts.multipart_part(chunks[0]),
        metadata_cls=message_factory.GetMessageClass(metadata),
    )
