"""The helpers every connector shares (http.py answers, common.py), pinned once here."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from service.connectors.base import (
    AuthenticationFailed,
    CallRecord,
    ConnectorError,
    Direction,
    Outcome,
    RateLimited,
    RecordingNotFound,
    UnexpectedAnswer,
    Unreachable,
)
from service.connectors.common import (
    ceil_second,
    finite_float,
    first_sighting,
    floor_second,
    halves,
    json_object,
    object_list,
    required_text,
    utc,
    windows,
)
from service.connectors.http import (
    MAX_RETRY_AFTER,
    audio_stream,
    body_chunks,
    content_length,
    media_type,
    raise_for_status,
    retry_after,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def answer(status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers)


# -- status and Retry-After -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (404, RecordingNotFound),
        (429, RateLimited),
        (503, RateLimited),
        (400, UnexpectedAnswer),
        (302, UnexpectedAnswer),
        (500, UnexpectedAnswer),
    ],
)
def test_status_maps_to_its_error(status: int, expected: type[ConnectorError]) -> None:
    with pytest.raises(ConnectorError) as caught:
        raise_for_status(answer(status), not_found=RecordingNotFound)
    assert type(caught.value) is expected


@pytest.mark.parametrize("status", [200, 204, 299])
def test_2xx_passes(status: int) -> None:
    raise_for_status(answer(status))


def test_404_is_unexpected_unless_told_otherwise() -> None:
    with pytest.raises(UnexpectedAnswer):
        raise_for_status(answer(404))


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(RateLimited) as caught:
        raise_for_status(answer(429, {"retry-after": "9"}))
    assert caught.value.retry_after == 9.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("1e9", MAX_RETRY_AFTER),
        ("inf", None),
        ("nan", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("Mon, 01 Jan 2001 00:00:00 GMT", 0.0),
    ],
)
def test_retry_after_reads_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after(value) == expected


@pytest.mark.parametrize("zone", ["GMT", "-0000"])  # -0000 parses naive: taken as UTC
def test_retry_after_reads_an_http_date(zone: str) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    value = email.utils.format_datetime(when.replace(microsecond=0), usegmt=True).replace("GMT", zone)
    seconds = retry_after(value)
    assert seconds is not None and 100 < seconds <= 120


# -- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"content-length": "12"}, 12),
        ({}, None),
        ({"content-length": "twelve"}, None),
        ({"content-length": "-1"}, None),
        ({"content-length": "12", "content-encoding": "gzip"}, None),  # httpx hands out decoded bytes
    ],
)
def test_content_length(headers: dict[str, str], expected: int | None) -> None:
    assert content_length(answer(200, headers)) == expected


def test_media_type_drops_parameters() -> None:
    assert media_type(answer(200, {"content-type": "Audio/MPEG; charset=x"})) == "audio/mpeg"
    assert media_type(answer()) == ""


class _Broken(httpx.AsyncByteStream):
    def __init__(self, exc: Exception) -> None:
        self._exc = exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"first"
        raise self._exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ReadError("reset"), Unreachable),
        (
            httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
            UnexpectedAnswer,
        ),
    ],
)
async def test_a_broken_body_raises_a_connector_error(exc: Exception, expected: type[ConnectorError]) -> None:
    response = httpx.Response(200, stream=_Broken(exc))
    got: list[bytes] = []
    with pytest.raises(ConnectorError) as caught:
        async for chunk in body_chunks(response):
            got.append(chunk)
    assert got == [b"first"]
    assert type(caught.value) is expected
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_audio_stream_closes_its_chunks_on_exit() -> None:
    response = httpx.Response(200, headers={"content-length": "5"}, stream=_Broken(httpx.ReadError("x")))
    async with audio_stream(response, "audio/wav") as audio:
        assert (audio.content_type, audio.length) == ("audio/wav", 5)
        assert await anext(audio.chunks) == b"first"
    assert [chunk async for chunk in audio.chunks] == []


# -- config, times, windows ------------------------------------------------------------


def test_required_text() -> None:
    assert required_text({"k": " v "}, "k") == "v"
    for config in ({}, {"k": " "}, {"k": 5}):
        with pytest.raises(ValueError, match="k is required"):
            required_text(config, "k")


def test_utc() -> None:
    bangkok = datetime(2024, 1, 1, 7, tzinfo=timezone(timedelta(hours=7)))
    assert utc(bangkok) == T0 and utc(bangkok).tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        utc(datetime(2024, 1, 1))
    assert utc(datetime(2024, 1, 1), naive_is_utc=True) == T0


def test_second_rounding() -> None:
    moment = T0 + timedelta(seconds=1, microseconds=5)
    assert floor_second(moment) == T0 + timedelta(seconds=1)
    assert ceil_second(moment) == T0 + timedelta(seconds=2)
    assert ceil_second(T0) == T0


def test_windows_cut_datetimes_and_ints() -> None:
    day = timedelta(days=1)
    assert list(windows(T0, T0 + 2.5 * day, day)) == [
        (T0, T0 + day),
        (T0 + day, T0 + 2 * day),
        (T0 + 2 * day, T0 + 2.5 * day),
    ]
    assert list(windows(0, 25, 10)) == [(0, 10), (10, 20), (20, 25)]
    assert list(windows(T0, T0, day)) == []
    assert list(windows(5, 0, 10)) == []


@pytest.mark.parametrize("size", [0, -1])
def test_windows_refuse_a_size_that_would_never_end(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        list(windows(0, 10, size))


def test_halves_split_at_a_whole_second() -> None:
    end = T0 + timedelta(seconds=5)
    assert halves(T0, end) == ((T0, T0 + timedelta(seconds=2)), (T0 + timedelta(seconds=2), end))
    assert halves(T0, T0 + timedelta(seconds=1, microseconds=999_999)) == ()


def test_first_sighting_keeps_each_call_once_inside_its_window() -> None:
    def call(call_id: str, at: datetime) -> CallRecord:
        return CallRecord(call_id, at, 0.0, "", "", Direction.INBOUND, Outcome.ANSWERED, None)

    end = T0 + timedelta(hours=1)
    seen: set[str] = set()
    rows = [call("a", T0), call("a", T0), call("b", end), call("c", T0 - timedelta(seconds=1))]
    assert [r.external_id for r in rows if first_sighting(r, T0, end, seen)] == ["a"]
    assert seen == {"a"}


def test_json_shapes() -> None:
    assert json_object({"a": 1}) == {"a": 1}
    assert object_list([{"a": 1}]) == [{"a": 1}]
    not_objects: list[object] = [[], None, "x"]
    for bad in not_objects:
        with pytest.raises(UnexpectedAnswer):
            json_object(bad)
    not_lists: list[object] = [{}, [1], [{}, None], None]
    for bad in not_lists:
        with pytest.raises(UnexpectedAnswer):
            object_list(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (2.5, 2.5), (True, None), ("3", None), (float("nan"), None), (None, None)],
)
def test_finite_float(value: object, expected: float | None) -> None:
    assert finite_float(value) == expected
