"""An OpenAPI 3.1 document generated from the same bindings the shim serves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor

from service.rest.bindings import Binding, FieldDescriptor, MessageDescriptor
from service.rest.render import MAX_JSON_INT

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
        components[name] = {
            "type": "object",
            "properties": {f.json_name: _field_schema(f, components) for f in desc.fields},
            "additionalProperties": False,
        }
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(binding: Binding, components: dict[str, Any]) -> dict[str, Any]:
    desc = binding.request_type.DESCRIPTOR
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in binding.path_params
    ]
    op: dict[str, Any] = {
        "operationId": binding.method.name,
        "tags": [binding.method.containing_service.name],
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": _message_ref(binding.response_type.DESCRIPTOR, components)}
                },
            },
            "default": {"description": "Error", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
        },
    }
    if binding.body:
        op["requestBody"] = {
            "content": {"application/json": {"schema": _message_ref(desc, components)}},
        }
    else:
        params += [
            {"name": f.json_name, "in": "query", "required": False, "schema": _field_schema(f, components)}
            for f in desc.fields
            if f.name not in binding.path_params
        ]
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
                "business": {"type": "apiKey", "in": "header", "name": "X-Business-Id"},
            },
        },
        "security": [{"bearer": [], "business": []}],
    }
