"""The REST shim: an ASGI app generated from the google.api.http bindings that calls
the very same servicer methods as gRPC, and renders seed 000's JSON and errors."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from google.api import httpbody_pb2
from google.protobuf import message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from service.errors import (
    DomainError,
    MalformedRequest,
    RangeNotSatisfiable,
    RateLimited,
    UnsupportedMediaType,
)
from service.rest.bindings import Binding
from service.rest.context import RestAbort, RestContext
from service.rest.render import parse_into, query_to_dict, to_json
from service.transport.bodies import ByteStream
from service.transport.calls import CallRecord, current_call, log_call, request_id
from service.transport.requests import check_request
from service.transport.status import HTTP_FOR_GRPC, HTTP_STATUS, domain_error

log = logging.getLogger("callvault.rest")

MAX_JSON_BODY = 1024 * 1024
# Deeper JSON is refused before it reaches the parser's or protobuf's recursion (a
# RecursionError, once a 500). No request of this API nests more than a few levels.
MAX_JSON_DEPTH = 32
Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(status: int, code: str, message_text: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message_text}, status_code=status)


async def _bounded_body(request: Request) -> bytes:
    """The body, refused as soon as it passes MAX_JSON_BODY: never buffered whole first."""
    body = bytearray()
    async for piece in request.stream():
        body.extend(piece)
        if len(body) > MAX_JSON_BODY:
            raise MalformedRequest("request body is over 1 MiB")
    return bytes(body)


async def _read_json_body(request: Request) -> dict[str, Any]:
    raw = await _bounded_body(request)
    if not raw.strip():
        return {}
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("send the request body as Content-Type: application/json")
    _check_depth(raw)
    try:
        data = json.loads(raw)
    except ValueError:
        raise MalformedRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedRequest("request body must be a JSON object")
    return data


def _check_depth(raw: bytes) -> None:
    """Refuse nesting past MAX_JSON_DEPTH, counted on the raw bytes (brackets inside
    strings skipped) so no parser recursion ever starts on it."""
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise MalformedRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1


def _path_fields(binding: Binding, request: Request) -> dict[str, Any]:
    """The path's {params} under their JSON names, ready for parse_into."""
    fields = binding.request_type.DESCRIPTOR.fields_by_name
    return {fields[name].json_name: request.path_params[name] for name in binding.path_params}


async def _build_request(binding: Binding, request: Request) -> message.Message:
    data: dict[str, Any] = {}
    if binding.body == "*":
        data.update(await _read_json_body(request))
    elif binding.body:
        data[binding.body] = await _read_json_body(request)
    elif request.query_params:
        data.update(query_to_dict(binding.request_type.DESCRIPTOR, request.query_params.multi_items()))
    data.update(_path_fields(binding, request))
    msg = binding.request_type()
    parse_into(msg, data)
    check_request(msg)
    return msg


async def _streamed_requests(binding: Binding, request: Request) -> AsyncIterator[message.Message]:
    """A client-streaming call from a raw HTTP body: the body's chunks fill the field the
    binding names (body: "chunk"); the first message also carries the path and query
    parameters, and the Content-Type header when the message has a content_type field."""
    first = binding.request_type()
    head: dict[str, Any] = query_to_dict(first.DESCRIPTOR, request.query_params.multi_items())
    head.update(_path_fields(binding, request))
    if "content_type" in first.DESCRIPTOR.fields_by_name and request.headers.get("content-type"):
        head["contentType"] = request.headers["content-type"]
    parse_into(first, head)
    check_request(first)
    pending: message.Message | None = first
    async for piece in request.stream():
        if not piece:
            continue
        msg = pending or binding.request_type()
        setattr(msg, binding.body, piece)
        pending = None
        yield msg
    if pending is not None:
        yield pending


async def _body_chunks(first: httpbody_pb2.HttpBody, rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    yield first.data
    async for chunk in rest:
        yield chunk.data


async def _chunks_after(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk


def _status(context: RestContext) -> int:
    """A servicer may choose the HTTP status (206 for a range) with x-http-code metadata."""
    return int(context.response_headers.pop("x-http-code", "200"))


async def _respond(binding: Binding, request: Request, context: RestContext) -> Response:
    arg: Any = (
        _streamed_requests(binding, request)
        if binding.client_streaming
        else await _build_request(binding, request)
    )
    if binding.bytes_handler is not None:
        # The first chunk is read here too: errors up to the first byte (a blob gone
        # since the lookup, say) still become JSON errors.
        body: ByteStream = await binding.bytes_handler(arg, context)
        head = await anext(body.chunks, b"")
        return StreamingResponse(
            _chunks_after(head, body.chunks),
            status_code=_status(context),
            media_type=body.content_type,
            headers=context.response_headers,
        )
    if binding.server_streaming:
        stream: AsyncIterator[Any] = binding.handler(arg, context)
        # The first message runs the servicer up to its first yield: errors still become
        # JSON errors, and the headers it sent are known before the body starts.
        first = await anext(stream, httpbody_pb2.HttpBody())
        status = _status(context)
        return StreamingResponse(
            _body_chunks(first, stream),
            status_code=status,
            media_type=first.content_type or "application/octet-stream",
            headers=context.response_headers,
        )
    result = await binding.handler(arg, context)
    status = _status(context)
    if isinstance(result, httpbody_pb2.HttpBody):
        return Response(
            result.data, status_code=status, media_type=result.content_type, headers=context.response_headers
        )
    return JSONResponse(to_json(result), status_code=status, headers=context.response_headers)


def _call_headers(call: CallRecord, error: DomainError | None) -> dict[str, str]:
    headers = {"x-request-id": call.request_id}
    if call.rate is not None:
        headers.update(
            {
                "RateLimit-Limit": str(call.rate.limit),
                "RateLimit-Remaining": str(call.rate.remaining),
                "RateLimit-Reset": str(call.rate.reset_seconds),
            }
        )
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{error.size}"
    return headers


def endpoint_for(binding: Binding) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        call = CallRecord(
            method=binding.full_method,
            transport="rest",
            request_id=request_id(request.headers.get("x-request-id")),
        )
        error: DomainError | None = None
        token = current_call.set(call)
        try:
            context = RestContext(request.headers.items())
            response = await _respond(binding, request, context)
        except RestAbort as exc:
            response = error_response(HTTP_FOR_GRPC.get(exc.code, 500), exc.code.name.lower(), exc.details)
        except Exception as exc:
            error = domain_error(exc)
            if error is None:
                log.exception("unhandled error in %s", binding.full_method)
                response = error_response(500, "internal", "internal error")
            else:
                response = error_response(HTTP_STATUS[error.category], error.code, error.message)
        finally:
            current_call.reset(token)
        response.headers.update(_call_headers(call, error))
        log_call(call, str(response.status_code))
        return response

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


def build_app(bindings: Sequence[Binding], extra_routes: Sequence[Route] = ()) -> Starlette:
    routes = [Route(b.path, endpoint_for(b), methods=[b.verb]) for b in bindings]
    return Starlette(routes=[*extra_routes, *routes], exception_handlers={HTTPException: _http_error})
