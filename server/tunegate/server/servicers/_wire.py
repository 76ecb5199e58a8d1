"""Proto ⇄ domain conversion shared by the servicers: enum wire spellings and caller scope."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.descriptor import EnumDescriptor
from tunegate.metadata import ACCEPTED_KEY
from tunegate.server.auth._keys import current_principal
from tunegate.server.owner import check_credentials, owner_from_metadata
from tunegate.v1 import options_pb2

if TYPE_CHECKING:
    import grpc.aio

    Context = grpc.aio.ServicerContext[Any, Any]
else:
    Context = Any

IDEMPOTENCY_KEY = "idempotency-key"
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
"""How much of a rejected client stream is read and discarded before the error is sent."""

T = TypeVar("T")


@functools.cache
def _tables(descriptor: EnumDescriptor) -> tuple[dict[int, str], dict[str, int]]:
    by_number: dict[int, str] = {}
    for value in descriptor.values:
        wire = value.GetOptions().Extensions[options_pb2.wire]
        if wire:
            by_number[value.number] = wire
    return by_number, {wire: number for number, wire in by_number.items()}


def to_wire(descriptor: EnumDescriptor, number: int) -> str | None:
    """The OpenAI spelling of an enum value; None for UNSPECIFIED (0).

    An unknown number (a newer client) becomes its decimal string, which no rule accepts."""
    if number == 0:
        return None
    return _tables(descriptor)[0].get(number, str(number))


def from_wire(descriptor: EnumDescriptor, wire: str) -> int:
    """The enum number of an OpenAI spelling (0 if unknown)."""
    return _tables(descriptor)[1].get(wire, 0)


def _metadata(context: Context) -> Iterable[tuple[str, str | bytes]]:
    return context.invocation_metadata() or ()


def caller(context: Context) -> str:
    """The owner scope of the call: its gateway key's tenant (`tunegate.server.auth`), else the
    scope its credentials give (`tunegate.server.owner`)."""
    principal = current_principal.get()
    return principal.owner if principal is not None else owner_from_metadata(_metadata(context))


def call_metadata(context: Context) -> dict[str, str]:
    """The call's metadata as a dict for routing: lower-case keys, the first text value of each
    (binary `-bin` values skipped). Raises `InvalidArgument` for an unreadable credential."""
    check_credentials(_metadata(context))
    result: dict[str, str] = {}
    for key, value in _metadata(context):
        if isinstance(value, str):
            result.setdefault(key.lower(), value)
    return result


def idempotency_key(context: Context) -> str | None:
    """The `idempotency-key` metadata value, used when the message's `request_id` is empty."""
    for key, value in _metadata(context):
        if key == IDEMPOTENCY_KEY and isinstance(value, str) and value:
            return value
    return None


async def accept_stream(context: Context) -> None:
    """Sends the initial metadata of a client-streaming call once its checks that need no body
    have passed. The edge waits for it before it reads the HTTP body (and before it sends
    `100 Continue`), so a call refused on its metadata alone is answered before any body byte is
    read; a call refused here ends at once, with no client write in flight."""
    await context.send_initial_metadata(((ACCEPTED_KEY, "true"),))


async def answer_after_stream(outcome: Awaitable[T], requests: AsyncIterator[Any]) -> T:
    """Awaits `outcome` (a domain call consuming `requests`). When it fails before the client
    has finished sending, the rest of the stream is read and discarded — up to
    `DRAIN_LIMIT_BYTES` — before the error goes out.

    Why: when a server answers a client-streaming call while a client write is in flight,
    grpc.aio's client may surface its own INTERNAL ("Internal error from Core") instead of the
    server's status, so a bad purpose would read as a 500. HTTP servers read the rest of a
    rejected body for the same reason. Past the limit the error is sent anyway (the edge keeps
    the server's status through such an overwrite, `tunegate.edge._upload._ServerStatus`; other gRPC
    clients may not).
    """
    try:
        return await outcome
    except Exception:
        drained = 0
        async for message in requests:
            drained += message.ByteSize()
            if drained > DRAIN_LIMIT_BYTES:
                break
        raise
