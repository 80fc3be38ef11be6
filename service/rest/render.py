"""Protobuf messages to and from seed 000's JSON."""

from __future__ import annotations

import functools
import re
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

# proto3's JSON mapping writes these as strings; the mirrored API writes numbers.
_INT64S = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
}
_FLOATS = {descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT}
# The largest integer every JSON reader (a JavaScript number, a double) holds exactly.
MAX_JSON_INT = 2**53
_INT, _FLOAT, _MESSAGE = 0, 1, 2


def to_json(msg: message.Message) -> dict[str, Any]:
    """lowerCamelCase names; fields without presence rendered even when default
    ("ok": false, "items": []), except a json_only_with field whose sibling is unset.
    Integers are JSON numbers (not proto3's strings for int64) and whole floats have no
    fraction ("score": 86), as the mirrored API writes them."""
    data = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    _omit_unpaired(msg.DESCRIPTOR, data)
    _numbers(msg.DESCRIPTOR.full_name, data)
    return data


@functools.cache
def _number_plan(full_name: str) -> tuple[tuple[str, int, str], ...]:
    """The fields of a message type that _numbers rewrites, once per type: (JSON name, what
    it holds, the nested type for messages and maps). Types with nothing to rewrite are
    left out, so a page of recordings costs one pass over its items' few number fields."""
    desc = descriptor_pool.Default().FindMessageTypeByName(full_name)
    plan: list[tuple[str, int, str]] = []
    for field in desc.fields:
        kind, nested = _kind(field)
        if kind is not None:
            plan.append((field.json_name, kind, nested))
    return tuple(plan)


def _kind(field: FieldDescriptor) -> tuple[int | None, str]:
    if field.type in _INT64S:
        return _INT, ""
    if field.type in _FLOATS:
        return _FLOAT, ""
    nested = field.message_type
    # No map of the API holds numbers; a map field is left as MessageToDict writes it.
    if nested is None or not nested.full_name.startswith("callvault.") or nested.GetOptions().map_entry:
        return None, ""
    return (_MESSAGE, nested.full_name) if _number_plan(nested.full_name) else (None, "")


def _number(kind: int, value: Any) -> Any:
    if kind == _INT and isinstance(value, str):
        return int(value)
    if kind == _FLOAT and isinstance(value, float) and value.is_integer() and abs(value) <= MAX_JSON_INT:
        return int(value)
    return value


def _numbers(full_name: str, data: dict[str, Any]) -> None:
    for name, kind, nested in _number_plan(full_name):
        value = data.get(name)
        if value is None:
            continue
        if kind == _MESSAGE:
            for item in value if isinstance(value, list) else (value,):
                _numbers(nested, item)
        elif isinstance(value, list):
            data[name] = [_number(kind, item) for item in value]
        else:
            data[name] = _number(kind, value)


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
    _check_int_range(msg.DESCRIPTOR, data, "")
    try:
        json_format.ParseDict(data, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        problem = _parse_problem(str(exc))
        field = problem.split(": ", 1)[0] if ": " in problem else None
        raise MalformedRequest(problem, field=field) from None


def _check_int_range(desc: MessageDescriptor, data: dict[str, Any], prefix: str) -> None:
    """Refuse a 64-bit integer (a JSON number or a numeric string) that a JSON reader could
    not hold exactly, since answers carry integers as numbers (to_json)."""
    for key, value in data.items():
        field = desc.fields_by_camelcase_name.get(key) or desc.fields_by_name.get(key)
        if field is None:
            continue  # ParseDict names the unknown field
        name = prefix + field.json_name
        if field.type in _INT64S:
            for item in value if isinstance(value, list) else (value,):
                if _too_big(item):
                    raise InvalidArgument(name, f"must be between -{MAX_JSON_INT} and {MAX_JSON_INT}")
        elif field.message_type is not None and field.message_type.full_name.startswith("callvault."):
            for item in value if isinstance(value, list) else (value,):
                if isinstance(item, dict) and not field.message_type.GetOptions().map_entry:
                    _check_int_range(field.message_type, item, name + ".")


def _too_big(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return False  # not a number: ParseDict says so
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_JSON_INT


# protobuf's other shape of message: "Unpaired surrogate at UpdateProviderRequest.name".
_AT_FIELD = re.compile(r"(?P<problem>.+) at [A-Za-z0-9_]+\.(?P<field>[A-Za-z0-9_.\[\]]+?)\.?")


def _parse_problem(text: str) -> str:
    """The problem, field first ("name: ..."), from protobuf's ParseError text."""
    first = text.splitlines()[0].strip()
    if "has no field named" in first:
        name = first.split('has no field named "', 1)[1].split('"', 1)[0]
        return f"{name}: unknown field"
    at = _AT_FIELD.fullmatch(first)
    if at is not None and not first.startswith("Failed to parse "):
        return f"{at['field']}: {at['problem']}"
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
