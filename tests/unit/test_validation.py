"""The shared field rules and the Range parser, value by value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.errors import InvalidArgument, RangeNotSatisfiable
from service.recordings.store import ByteRange, parse_range
from service.storage.models import Provider, Recording
from service.validation import (
    check_finite,
    check_instant,
    check_media_type,
    check_text,
    is_media_type,
    max_length,
)


def test_lengths_come_from_the_model() -> None:
    assert (max_length(Recording.note), max_length(Recording.external_id), max_length(Provider.name)) == (
        2000,
        200,
        60,
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [("a\x00b", "NUL"), ("n" * 2001, "at most 2000"), ("\ud800", "valid Unicode")],
)
def test_text_refused(value: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as raised:
        check_text(value, "note", Recording.note)
    assert raised.value.field == "note"


def test_text_at_the_limit_passes() -> None:
    assert check_text("é" * 2000, "note", Recording.note) == "é" * 2000


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=7))),  # astimezone overflows
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1899, 12, 31, 23, 59, tzinfo=UTC),
        datetime(9000, 1, 1, tzinfo=UTC),
    ],
)
def test_instants_out_of_range(value: datetime) -> None:
    with pytest.raises(InvalidArgument, match="between 1900 and 8999"):
        check_instant(value, "callAt")


def test_instants_in_range_come_back_in_utc() -> None:
    bangkok = timezone(timedelta(hours=7))
    assert check_instant(datetime(1900, 1, 1, 7, tzinfo=bangkok), "callAt") == datetime(
        1900, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), -0.5])
def test_finite(value: float) -> None:
    with pytest.raises(InvalidArgument):
        check_finite(value, "durationSeconds", minimum=0)


@pytest.mark.parametrize(
    "value",
    [
        "audio/wav",
        "audio/mpeg",
        "application/octet-stream",
        'audio/wav; codecs="1"',
        "audio/x-wav;rate=8000",
        "audio/wav;",
    ],
)
def test_media_types_accepted(value: str) -> None:
    assert is_media_type(value)


@pytest.mark.parametrize(
    "value",
    [
        "wav",
        "audio/",
        "/wav",
        "audio/wav\r\nX: 1",
        "audio/wav\n",
        "audio wav/x",
        "audio/wav; x",
        "a/" + "b" * 99,
        "é/x",
    ],
)
def test_media_types_refused(value: str) -> None:
    with pytest.raises(InvalidArgument, match="contentType"):
        check_media_type(value, "contentType")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 100, 1000)),
        ("bytes=990-", ByteRange(990, 1000, 1000)),
        ("bytes=-10", ByteRange(990, 1000, 1000)),
        ("bytes=-5000", ByteRange(0, 1000, 1000)),
        ("bytes=900-5000", ByteRange(900, 1000, 1000)),
        ("BYTES=0-0", ByteRange(0, 1, 1000)),
        # Not one valid range: ignored, the whole file (RFC 9110 section 14.2).
        ("bytes=5-1", ByteRange(0, 1000, 1000)),
        ("bytes=abc", ByteRange(0, 1000, 1000)),
        ("bytes=-", ByteRange(0, 1000, 1000)),
        ("bytes=0-1,5-6", ByteRange(0, 1000, 1000)),
        ("items=0-1", ByteRange(0, 1000, 1000)),
        ("bytes=1.5-", ByteRange(0, 1000, 1000)),
        (None, ByteRange(0, 1000, 1000)),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", f"bytes={10**30}-"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        parse_range(header, 1000)
    assert raised.value.size == 1000
