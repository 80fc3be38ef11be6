"""Hypothesis strategies for any protobuf request message, built by walking its descriptor:
strings with NUL, huge and non-ASCII text, and values the service gives meaning to (dates
at the calendar's edges, kinds, directions, real ids); integers across the whole range of
their type; NaN and infinite doubles; random enum numbers; nested messages and Structs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from google.protobuf import descriptor, message, message_factory, struct_pb2
from hypothesis import strategies as st

FD = descriptor.FieldDescriptor
_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
# Values the servicers treat specially, so generated calls get past the first check.
MEANINGFUL = (
    "",
    "in",
    "out",
    "threecx",
    "kazoo",
    "upload",
    "normal",
    "none",
    "callAt",
    "score",
    "asc",
    "desc",
    "audio/wav",
    "audio/wav\r\nX-Injected: 1",
    "NaN",
    "Infinity",
    "-1",
    "0001-01-01",
    "9999-12-31",
    "0001-01-01T00:00:00+07:00",
    "9999-12-31T23:59:59.999999-05:00",
    "2026-05-20T08:14:00+07:00",
    "https://pbx.example.com",
    "http://127.0.0.1:9",
    "http://[::1",
    "http://127.0.0.1:99999",
    "wss://pbx.example.com/ws",
    "\x00",
    "a\x00b",
)


def text(ids: Sequence[str] = (), *, longest: int = 70_000) -> st.SearchStrategy[str]:
    """`longest` bounds the long runs: a URL cannot carry 70,000 characters. Half the
    draws are values with a meaning here (one_of picks its branches evenly)."""
    meaningful = st.sampled_from(MEANINGFUL + tuple(ids))
    return st.one_of(
        meaningful,
        meaningful,
        meaningful,
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=50, max_size=300),
        st.builds(lambda ch, n: ch * n, st.sampled_from("x\x00é😀%_\\"), st.integers(1000, longest)),
    )


def _json_values() -> st.SearchStrategy[Any]:
    """Struct values: JSON's, plus NaN and infinities, which a protobuf Struct can hold."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(),
        st.sampled_from((math.nan, math.inf, -math.inf)),
        text(),
        st.integers(-(2**53), 2**53),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text(), inner, max_size=4)),
        max_leaves=12,
    )


def _struct(ids: Sequence[str]) -> st.SearchStrategy[struct_pb2.Struct]:
    keys = st.one_of(
        st.sampled_from(("baseUrl", "username", "password", "headless", "pollIntervalMinutes", "apiKey")),
        text(ids),
    )

    def build(values: dict[str, Any]) -> struct_pb2.Struct:
        out = struct_pb2.Struct()
        out.update(values)
        return out

    return st.dictionaries(keys, _json_values(), max_size=5).map(build)


def _scalar(field: Any, ids: Sequence[str]) -> st.SearchStrategy[Any]:
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return st.one_of(st.integers(-2, 300), st.integers(low, high), st.sampled_from((low, high)))
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(
            allow_nan=True, allow_infinity=True, width=64 if field.type == FD.TYPE_DOUBLE else 32
        )
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_STRING:
        return text(ids)
    if field.type == FD.TYPE_BYTES:
        return st.binary(max_size=2000)
    if field.type == FD.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-5, 1000))
    raise AssertionError(f"no strategy for field type {field.type} of {field.full_name}")


def _value(field: Any, ids: Sequence[str], depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is None:
        return _scalar(field, ids)
    return messages(field.message_type, ids, depth + 1)


def messages(desc: Any, ids: Sequence[str] = (), depth: int = 0) -> st.SearchStrategy[message.Message]:
    """Messages of type `desc` with any subset of their fields set."""
    cls = message_factory.GetMessageClass(desc)
    if desc.full_name == "google.protobuf.Struct":
        return _struct(ids)
    if depth > 3:
        return st.just(cls())
    fields = {}
    for field in desc.fields:
        strategy = _value(field, ids, depth)
        if ids and field.type == FD.TYPE_STRING and (field.name == "id" or field.name.endswith("_id")):
            strategy = st.one_of(st.sampled_from(ids), strategy)  # half the time a real row
        if field.is_repeated:
            strategy = st.lists(strategy, max_size=3)
        fields[field.name] = st.one_of(st.none(), strategy)

    def build(values: dict[str, Any]) -> message.Message:
        msg = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = desc.fields_by_name[name]
            if field.is_repeated:
                getattr(msg, name).extend(value)
            elif field.message_type is not None:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries(fields).map(build)
