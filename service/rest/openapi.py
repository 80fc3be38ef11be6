"""An OpenAPI 3.1 document generated from the same bindings the shim serves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from callvault.v1 import options_pb2
from google.api import field_behavior_pb2
from google.protobuf import descriptor

from service.errors import DomainError, UnsupportedMediaType
from service.rest.bindings import Binding, FieldDescriptor, MessageDescriptor
from service.rest.render import MAX_JSON_INT
from service.transport.status import HTTP_STATUS

FD = descriptor.FieldDescriptor
# JSON numbers, not proto3's strings, within what a JSON reader holds exactly (render.py).
_INT64 = {"type": "integer", "format": "int64", "minimum": -MAX_JSON_INT, "maximum": MAX_JSON_INT}
_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_DOUBLE: {"type": "number"},
    FD.TYPE_FLOAT: {"type": "number"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_INT64: _INT64,
    FD.TYPE_UINT64: _INT64,
    FD.TYPE_SINT64: _INT64,
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.api.HttpBody": {"type": "string", "format": "binary"},
}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "message"],
}


# What every RPC can answer, besides the errors its (callvault.v1.errors) option lists.
_EVERY_RPC = ("invalid_argument", "invalid_request", "unauthenticated", "insufficient_scope", "rate_limited")
_WITH_BUSINESS = ("business_required", "business_not_found")
BUSINESS_HEADER = {
    "name": "X-Business-Id",
    "in": "header",
    "required": False,
    "description": "The business an account key acts for; a business key ignores it.",
    "schema": {"type": "string"},
}
RANGE_HEADER = {
    "name": "Range",
    "in": "header",
    "required": False,
    "description": "One byte range (bytes=START-END, bytes=START-, bytes=-SUFFIX): answered 206.",
    "schema": {"type": "string"},
}
_AUDIO = {"schema": {"type": "string", "format": "binary"}}


def _domain_errors() -> dict[str, set[int]]:
    """Each DomainError code with the HTTP statuses its classes answer (one code may be
    raised by more than one class)."""
    found: dict[str, set[int]] = {}
    pending: list[type[DomainError]] = [DomainError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, set()).add(HTTP_STATUS[cls.category])
        pending.extend(cls.__subclasses__())
    return found


def _required(field: FieldDescriptor) -> bool:
    behaviours = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviours


def _field_schema(field: FieldDescriptor, components: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None:
        schema = _message_ref(field.message_type, components)
    elif field.enum_type is not None:
        schema = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        schema = dict(_SCALARS.get(field.type, {"type": "string"}))
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _message_ref(desc: MessageDescriptor, components: dict[str, Any]) -> dict[str, Any]:
    if desc.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[desc.full_name])
    name = desc.full_name
    if name not in components:
        components[name] = {}  # placeholder against recursion
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.json_name: _field_schema(f, components) for f in desc.fields},
            "additionalProperties": False,
        }
        required = [f.json_name for f in desc.fields if _required(f)]
        if required:
            schema["required"] = required
        components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _no_business(binding: Binding) -> bool:
    # The generated stubs type an extension as a plain FieldDescriptor (render.py casts too).
    return bool(binding.method.GetOptions().Extensions[cast(Any, options_pb2.no_business)])


def error_codes(binding: Binding) -> list[str]:
    """The error codes an operation answers: every RPC's, the business header's, the ones
    its (callvault.v1.errors) option names, and a JSON body's media type."""
    codes = [*_EVERY_RPC]
    if not _no_business(binding):
        codes += _WITH_BUSINESS
    if binding.body == "*":
        codes.append(UnsupportedMediaType.code)
    codes += binding.method.GetOptions().Extensions[cast(Any, options_pb2.errors)]
    return list(dict.fromkeys(codes))


def _error_responses(binding: Binding) -> dict[str, Any]:
    known = _domain_errors()
    by_status: dict[int, list[str]] = {}
    for code in error_codes(binding):
        if code not in known:
            raise ValueError(f"{binding.method.full_name} names an unknown error code {code!r}")
        for status in known[code]:
            by_status.setdefault(status, []).append(code)
    return {
        str(status): {
            "description": "Error: " + ", ".join(f"`{c}`" for c in codes),
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status, codes in sorted(by_status.items())
    }


def _is_audio_download(binding: Binding) -> bool:
    return binding.server_streaming and binding.response_type.DESCRIPTOR.full_name == "google.api.HttpBody"


def _success(binding: Binding, components: dict[str, Any]) -> dict[str, Any]:
    if _is_audio_download(binding):
        ranged = {"Content-Range": {"schema": {"type": "string"}}}
        # The type the audio was stored with; one that is no media type is sent as bytes.
        audio = {"audio/*": _AUDIO, "application/octet-stream": _AUDIO}
        return {
            "200": {"description": "The audio", "content": audio},
            "206": {"description": "The requested range", "headers": ranged, "content": audio},
            "416": {
                "description": "Error: `range_not_satisfiable` (Content-Range: bytes */SIZE)",
                "headers": ranged,
                "content": {"application/json": {"schema": ERROR_SCHEMA}},
            },
        }
    schema = _message_ref(binding.response_type.DESCRIPTOR, components)
    return {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}


def _query(field: FieldDescriptor, components: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": field.json_name,
        "in": "query",
        "required": _required(field),
        "schema": _field_schema(field, components),
    }


def _operation(binding: Binding, components: dict[str, Any]) -> dict[str, Any]:
    desc = binding.request_type.DESCRIPTOR
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in binding.path_params
    ]
    op: dict[str, Any] = {
        "operationId": binding.method.name,
        "tags": [binding.method.containing_service.name],
        "responses": {**_success(binding, components), **_error_responses(binding)},
    }
    if binding.client_streaming:
        # The raw body fills the bytes field the binding names; the first message's other
        # fields come from the query (and content_type from the Content-Type header).
        op["requestBody"] = {
            "required": True,
            "content": {"audio/*": _AUDIO, "application/octet-stream": _AUDIO},
        }
        skip = {*binding.path_params, binding.body, "content_type"}
        params += [_query(f, components) for f in desc.fields if f.name not in skip]
    elif binding.body:
        op["requestBody"] = {
            "required": any(_required(f) for f in desc.fields),
            "content": {"application/json": {"schema": _message_ref(desc, components)}},
        }
    else:
        params += [_query(f, components) for f in desc.fields if f.name not in binding.path_params]
    if _is_audio_download(binding):
        params.append(RANGE_HEADER)
    if not _no_business(binding):
        params.append(BUSINESS_HEADER)
    if {"upload_token", "link_token"} & set(desc.fields_by_name):
        # A presigned URL's uploadToken, or a listen link's linkToken, stands in for the key.
        op["security"] = [{"bearer": []}, {}]
    if params:
        op["parameters"] = params
    return op


def openapi_document(bindings: Sequence[Binding], *, title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for binding in bindings:
        paths.setdefault(binding.path, {})[binding.verb.lower()] = _operation(binding, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer crk_...",
                },
            },
        },
        "security": [{"bearer": []}],
    }
