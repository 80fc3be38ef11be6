"""The gRPC side's one place where domain errors become statuses and every call is logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from google.protobuf.message import DecodeError
from grpc.aio import AbortError

from service.errors import MalformedRequest
from service.transport.calls import (
    CallRecord,
    current_call,
    internal_status,
    log_call,
    metadata_value,
    request_id,
    rich_status,
)
from service.transport.requests import check_request
from service.transport.status import domain_error

log = logging.getLogger("callvault.grpc")


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _begin(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> CallRecord:
    call = CallRecord(
        method=method, transport="grpc", request_id=request_id(metadata_value(context, "x-request-id"))
    )
    context.set_trailing_metadata(_call_metadata(call))
    return call


def _call_metadata(call: CallRecord) -> tuple[tuple[str, str], ...]:
    return (("x-request-id", call.request_id),)


async def _fail(context: grpc.aio.ServicerContext[Any, Any], call: CallRecord, exc: Exception) -> None:
    error = domain_error(exc)
    if error is not None:
        status = rich_status(error)
        log_call(call, status.code.name, error=error.code)
    else:
        log.exception("unhandled error in %s", call.method)
        status = internal_status()
        log_call(call, status.code.name, error="internal")
    trailing = (*status.trailing_metadata, *_call_metadata(call))
    await context.abort_with_status(_Status(status.code, status.details, trailing))


def _status_name(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "OK"


@dataclass(frozen=True)
class _Undecodable:
    """What a request that is not valid protobuf deserializes to. grpc answers UNKNOWN when
    the deserializer raises; this way the handler refuses it as INVALID_ARGUMENT."""

    problem: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    return deserialize


def _check(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise MalformedRequest(f"the request is not a valid protobuf message: {request.problem}")
    check_request(request)
    return request


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _check(request)


def _checked_request(request: Any) -> Any:
    """A unary request checked now; a request stream checked message by message."""
    if isinstance(request, message.Message | _Undecodable):
        return _check(request)
    return _checked(request)


def _wrap_unary(method: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _begin(method, context)
        token = current_call.set(call)
        try:
            response = await fn(_checked_request(request), context)
        except AbortError:
            raise
        except Exception as exc:
            await _fail(context, call, exc)
            raise  # unreachable: abort raises
        finally:
            current_call.reset(token)
        log_call(call, _status_name(context))
        return response

    return handler


def _wrap_stream(method: str, fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call = _begin(method, context)
        token = current_call.set(call)
        try:
            async for item in fn(_checked_request(request), context):
                yield item
        except AbortError:
            raise
        except Exception as exc:
            await _fail(context, call, exc)
        finally:
            current_call.reset(token)
        log_call(call, _status_name(context))

    return handler


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every callvault method handler; health and reflection pass untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith("/callvault."):
            return handler
        kwargs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_unary(method, handler.unary_unary), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_unary(method, handler.stream_unary), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(method, handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(method, handler.stream_stream), **kwargs)
