"""Protobuf messages to and from seed 000's JSON."""

from __future__ import annotations

import functools
from typing import Any, cast

from callvault.v1 import options_pb2
from google.protobuf import descriptor, descriptor_pool, json_format, message

from service.errors import InvalidArgument, MalformedRequest
from service.rest.bindings import FieldDescriptor, MessageDescriptor

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}
_INTS = {
    descriptor.FieldDescriptor.TYPE_INT32,
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT32,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT32,
    descriptor.FieldDescriptor.TYPE_SINT64,
}


def to_json(msg: message.Message) -> dict[str, Any]:
    """lowerCamelCase names; fields without presence rendered even when default
    ("ok": false, "items": []), except a json_only_with field whose sibling is unset."""
    data = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    _omit_unpaired(msg.DESCRIPTOR, data)
    return data


def _only_with(field: FieldDescriptor) -> str:
    """The sibling a field is shown with (its json_only_with option), or ""."""
    value: str = field.GetOptions().Extensions[cast(Any, options_pb2.json_only_with)]
    return value


@functools.cache
def _has_omissions(full_name: str) -> bool:
    """Whether a message type, or one it contains, has a json_only_with field (once per type)."""
    desc = descriptor_pool.Default().FindMessageTypeByName(full_name)
    for field in desc.fields:
        if _only_with(field):
            return True
        nested = field.message_type
        if nested is None or not nested.full_name.startswith("callvault.") or nested.full_name == full_name:
            continue
        if _has_omissions(nested.full_name):
            return True
    return False


def _omit_unpaired(desc: MessageDescriptor, data: dict[str, Any]) -> None:
    if not _has_omissions(desc.full_name):
        return
    for field in desc.fields:
        if field.json_name not in data:
            continue
        sibling = _only_with(field)
        # A presence field that is unset is absent from MessageToDict's output.
        if sibling and desc.fields_by_name[sibling].json_name not in data:
            del data[field.json_name]
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            value = data[field.json_name]
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and field.message_type.full_name.startswith("callvault."):
                    _omit_unpaired(field.message_type, item)


def parse_into(msg: message.Message, data: dict[str, Any]) -> None:
    try:
        json_format.ParseDict(data, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise MalformedRequest(_parse_problem(str(exc))) from None


def _parse_problem(text: str) -> str:
    first = text.splitlines()[0].strip()
    if "has no field named" in first:
        name = first.split('has no field named "', 1)[1].split('"', 1)[0]
        return f"{name}: unknown field"
    return first.replace("Failed to parse ", "").replace(" field: ", ": ")


def query_to_dict(desc: MessageDescriptor, params: list[tuple[str, str]]) -> dict[str, Any]:
    """Query parameters by their JSON (or proto) names, typed by the field they fill."""
    out: dict[str, Any] = {}
    for key, raw in params:
        field = desc.fields_by_camelcase_name.get(key) or desc.fields_by_name.get(key)
        if field is None or (
            field.message_type is not None
            and not field.message_type.full_name.startswith("google.protobuf.Timestamp")
        ):
            raise MalformedRequest(f"{key}: unknown query parameter")
        value: Any = raw
        if field.type == descriptor.FieldDescriptor.TYPE_BOOL:
            if raw.lower() not in _TRUE | _FALSE:
                raise InvalidArgument(key, "must be true or false")
            value = raw.lower() in _TRUE
        elif field.type in _INTS:
            try:
                value = int(raw)
            except ValueError:
                raise InvalidArgument(key, "must be a whole number") from None
        if field.is_repeated:
            out.setdefault(field.json_name, []).append(value)
        else:
            out[field.json_name] = value
    return out
