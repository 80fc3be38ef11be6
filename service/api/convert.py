"""Proto <-> plain values, shared by the servicers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, message, struct_pb2, timestamp_pb2

from service.storage.models import as_utc


def present(msg: message.Message, field: str) -> Any:
    """The field's value when it was set (proto3 `optional`), else None: "not sent" and
    "sent as the default" mean different things (a PATCH of isActive=false)."""
    return getattr(msg, field) if msg.HasField(field) else None


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def dict_to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """Whole seconds, as seed 000 shows them ("2026-05-01T00:00:00Z")."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(as_utc(value).replace(microsecond=0))
    return ts
