"""Checks every request message gets from both transports before a servicer sees it.

NUL is refused in every string of a request, ids and filters included, not only in what
is stored: PostgreSQL refuses NUL in any text parameter, so `GET /providers/%00` would
otherwise fail inside the database. Numbers in a Struct (a provider's config) must be
finite. The error names the field by its JSON path."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor, message

from service.validation import check_finite, check_plain

_STRUCT, _VALUE, _LIST = "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"


def check_request(msg: message.Message) -> None:
    """InvalidArgument naming the first string (or map key) that holds NUL or bad text."""
    _check(msg, "")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check(msg: message.Message, path: str) -> None:
    full_name = msg.DESCRIPTOR.full_name
    if full_name == _STRUCT:
        for key, value in msg.fields.items():  # type: ignore[attr-defined]
            check_plain(key, _join(path, key))
            _check(value, _join(path, key))
        return
    if full_name == _LIST:
        for index, value in enumerate(msg.values):  # type: ignore[attr-defined]
            _check(value, f"{path}[{index}]")
        return
    for field, value in msg.ListFields():
        where = path if full_name == _VALUE else _join(path, field.json_name)
        if full_name == _VALUE and field.name == "number_value":
            # JSON has no NaN or Infinity: such a Struct can be neither read back nor stored.
            check_finite(value, where)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _check_map(field, value, where)
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_value(field, item, f"{where}[{index}]")
        else:
            _check_value(field, value, where)


def _check_map(field: Any, value: Any, where: str) -> None:
    key_field, value_field = (
        field.message_type.fields_by_name["key"],
        field.message_type.fields_by_name["value"],
    )
    for key, item in value.items():
        name = _join(where, str(key))
        if key_field.type == descriptor.FieldDescriptor.TYPE_STRING:
            check_plain(key, name)
        _check_value(value_field, item, name)


def _check_value(field: Any, value: Any, where: str) -> None:
    if field.type == descriptor.FieldDescriptor.TYPE_STRING:
        check_plain(value, where)
    elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        _check(value, where)
