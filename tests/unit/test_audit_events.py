"""An audit event's canonical encoding: fixed, so a hash written today verifies for ever,
and every field is in it, so no field can change unseen."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from service.audit.events import Fields

EVENT = Fields(
    chain="b1",
    seq=7,
    at=datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC),
    business_id="b1",
    key_id="k1",
    key_name="QA",
    action="recording.audio.read",
    target_kind="recording",
    target_id="r1",
    range_start=0,
    range_end=65536,
    transport="rest",
    request_id="req",
    prev_hash="ab" * 32,
)


def test_the_encoding_is_fixed() -> None:
    assert EVENT.canonical() == (
        b'["v1","b1",7,"2026-12-01T10:00:00.123456+00:00","b1","k1","QA","recording.audio.read",'
        b'"recording","r1",0,65536,"rest","req","' + b"ab" * 32 + b'"]'
    )


def test_an_instant_is_hashed_in_utc_whatever_its_offset() -> None:
    shifted = EVENT.at.astimezone(timezone(timedelta(hours=7)))
    assert dataclasses.replace(EVENT, at=shifted).digest() == EVENT.digest()


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Fields)])
def test_every_field_is_covered(name: str) -> None:
    value = getattr(EVENT, name)
    if isinstance(value, datetime):
        changed: Any = value + timedelta(microseconds=1)
    elif isinstance(value, int):
        changed = value + 1
    else:
        changed = value + "x"
    assert dataclasses.replace(EVENT, **{name: changed}).digest() != EVENT.digest()


def test_a_value_cannot_move_into_its_neighbour() -> None:
    """Name "a", target "bc" and name "ab", target "c" hash apart (JSON strings are delimited)."""
    one = dataclasses.replace(EVENT, key_name="a", action="bc")
    two = dataclasses.replace(EVENT, key_name="ab", action="c")
    assert one.digest() != two.digest()
