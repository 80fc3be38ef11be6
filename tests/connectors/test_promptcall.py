"""PromptCallConnector against the fake promptCall PBX over loopback: auth, windows, audio.

What every connector must do (bad credentials, faults, streaming) is in test_contract.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from service.connectors.base import (
    AuthenticationFailed,
    CallRecord,
    Direction,
    Outcome,
    RecordingNotFound,
    UnexpectedAnswer,
    UnreadableAnswer,
)
from service.connectors.promptcall import PromptCallConnector
from service.errors import InvalidArgument
from service.kinds.promptcall import KIND
from tests.connectors.kinds import PROMPTCALL, PromptCallKind
from tests.connectors.support import POLICY, collect, digest
from tests.fakes.promptcall import FakePromptCall

T0 = datetime(2026, 5, 1, tzinfo=UTC)
CDR = PROMPTCALL.CDR
make = PROMPTCALL.make


class SmallAnswers(PromptCallConnector):
    num_records = 10


@pytest.fixture
def kind() -> PromptCallKind:
    return PROMPTCALL


def spread(fake: FakePromptCall, count: int, start: datetime, step: timedelta) -> list[str]:
    return [fake.add_call(start + i * step).uniqueid for i in range(count)]


# -- check and auth ------------------------------------------------------------------------


async def test_check_sends_the_basic_token(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    await conn.check()
    [request] = fake.requests
    assert request.path == CDR and request.query["numRecords"] == "1"
    assert request.headers["authorization"] == f"Basic {fake.token()}"


@pytest.mark.parametrize("how", ["query", "json"])
async def test_fake_accepts_the_other_documented_token_placements(fake: FakePromptCall, how: str) -> None:
    data = {"numRecords": "5", "startTime": "2026-05-01 00:00:00", "endTime": "2026-05-02 00:00:00"}
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        if how == "query":
            good = await client.get(CDR, params={**data, "token": fake.token()})
            bad = await client.get(CDR, params={**data, "token": "nope"})
        else:
            good = await client.post(CDR, json={**data, "token": fake.token()})
            bad = await client.post(CDR, json={**data, "token": "nope"})
    assert good.json() == {"success": True, "value": []}
    assert bad.json()["success"] is False


# -- listing -------------------------------------------------------------------------------


async def test_listing_walks_every_window_once(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    spread(fake, 3, T0 - timedelta(hours=3), timedelta(hours=1))  # before the range
    inside = spread(fake, 50, T0, timedelta(minutes=85))  # about 2.9 days
    spread(fake, 3, T0 + timedelta(days=3), timedelta(hours=1))  # after it
    records = await collect(conn, T0, T0 + timedelta(days=3))
    assert [r.external_id for r in records] == inside
    windows = [(r.query["startTime"], r.query["endTime"]) for r in fake.requests]
    assert windows == [  # the PBX's wall clock, UTC+7
        ("2026-05-01 07:00:00", "2026-05-02 07:00:00"),
        ("2026-05-02 07:00:00", "2026-05-03 07:00:00"),
        ("2026-05-03 07:00:00", "2026-05-04 07:00:00"),
    ]


async def test_a_full_answer_is_split_until_nothing_is_cut(fake: FakePromptCall) -> None:
    inside = spread(fake, 47, T0, timedelta(minutes=29))  # 47 rows in one day, 10 per answer
    connector = make(fake, SmallAnswers)
    records = await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert [r.external_id for r in records] == inside
    assert {r.query["numRecords"] for r in fake.requests} == {"10"}
    assert len(fake.requests) > 5


async def test_boundary_calls_belong_to_one_window(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    ids = [fake.add_call(T0 + timedelta(days=d)).uniqueid for d in range(4)]  # on every window edge
    records = await collect(conn, T0, T0 + timedelta(days=3))
    assert [r.external_id for r in records] == ids[:3]


async def test_over_large_answers_are_refused_by_the_fake(fake: FakePromptCall) -> None:
    class Greedy(PromptCallConnector):
        num_records = 1001

    connector = make(fake, Greedy)
    with pytest.raises(UnexpectedAnswer):
        await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()


async def test_listing_normalises_rows(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    out = fake.add_call(T0, duration=61, src="201", dst="0812345678", dcontext="from-internal")
    missed = fake.add_call(
        T0 + timedelta(minutes=1), src="0899999999", dst="202", disposition="NO ANSWER", recorded=False
    )
    first, second = await collect(conn, T0, T0 + timedelta(hours=1))
    assert first == CallRecord(
        external_id=out.uniqueid,
        started_at=T0,
        duration_seconds=61.0,
        caller="201",
        callee="0812345678",
        direction=Direction.OUTBOUND,
        outcome=Outcome.ANSWERED,
        recording_ref=(
            f"uniqueid={out.uniqueid}&filename={out.uniqueid}.wav"
            "&src=201&dst=0812345678&calldate=2026-05-01+07%3A00%3A00"
        ),
    )
    assert (second.external_id, second.direction, second.outcome) == (
        missed.uniqueid,
        Direction.INBOUND,
        Outcome.MISSED,
    )
    assert second.recording_ref is None


async def test_revoked_key_mid_walk_is_authentication_failed(
    fake: FakePromptCall, conn: PromptCallConnector
) -> None:
    spread(fake, 5, T0, timedelta(days=1))
    with pytest.raises(AuthenticationFailed) as caught:
        async for _ in conn.list_calls(T0, T0 + timedelta(days=5)):
            fake.api_secret = "rotated"
    assert "pc-secret-value" not in str(caught.value)


# -- recordings ------------------------------------------------------------------------------


async def test_recording_is_asked_for_by_its_uniqueid(
    fake: FakePromptCall, conn: PromptCallConnector
) -> None:
    cdr = fake.add_call(T0)
    await digest(conn, cdr.uniqueid)
    assert fake.requests[-1].query == {"uniqueid": cdr.uniqueid}


async def test_recording_with_revoked_key_is_authentication_failed(
    fake: FakePromptCall, conn: PromptCallConnector
) -> None:
    cdr = fake.add_call(T0)
    fake.api_secret = "rotated"
    with pytest.raises(AuthenticationFailed):
        await digest(conn, cdr.uniqueid)


# -- what the documentation leaves open (issue 10, item 6) -----------------------------------


async def test_time_zone_defaults_to_bangkok(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    cdr = fake.add_call(T0)
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    assert record.started_at == T0 == cdr.start
    assert fake.requests[0].query["startTime"] == "2026-05-01 07:00:00"
    assert KIND.readable({}, KIND.by_name["timeZone"].read_as) == {"timeZone": "Asia/Bangkok"}


@pytest.mark.parametrize("zone", ["UTC", "America/Sao_Paulo", "Europe/Berlin"])
async def test_cdr_times_are_read_in_the_providers_time_zone(fake: FakePromptCall, zone: str) -> None:
    fake.tz = ZoneInfo(zone)  # the PBX's wall clock
    inside = spread(fake, 12, T0, timedelta(hours=2))
    fake.add_call(T0 - timedelta(minutes=1))
    fake.add_call(T0 + timedelta(days=1))
    connector = make(fake, timeZone=zone)
    records = await collect(connector, T0, T0 + timedelta(days=1))
    await connector.aclose()
    assert [(r.external_id, r.started_at) for r in records] == [
        (uid, fake.calls[uid].start) for uid in inside
    ]
    expected = T0.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")
    assert fake.requests[0].query["startTime"] == expected


@pytest.mark.parametrize("bad", ["Mars/Olympus", "../../etc/passwd", "UTC+7", 7])
def test_time_zone_setting_must_be_an_iana_zone(bad: object) -> None:
    config = {"baseUrl": "https://pbx.example.com", "apiKey": "k", "apiSecret": "s", "timeZone": bad}
    with pytest.raises(InvalidArgument) as caught:
        KIND.validate(config, policy=POLICY)
    assert "config.timeZone" in str(caught.value)


@pytest.mark.parametrize("lookup", ["filename", "src+dst+calldate"])
async def test_recording_falls_back_to_the_other_documented_lookups(
    fake: FakePromptCall, conn: PromptCallConnector, lookup: str
) -> None:
    fake.recapi_lookups = {lookup}  # this PBX answers only that look-up
    cdr = fake.add_call(T0, src="0899999999", dst="205")
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    assert record.recording_ref is not None
    assert cdr.audio is not None and (await digest(conn, record.recording_ref)).sha256 == cdr.audio.sha256()
    asked = [r.query for r in fake.requests if r.path == PROMPTCALL.REC]
    assert asked[0] == {"uniqueid": cdr.uniqueid}  # the documented look-up first
    wanted = (
        {"filename": f"{cdr.uniqueid}.wav"}
        if lookup == "filename"
        else {"src": "0899999999", "dst": "205", "calldate": "2026-05-01 07:00:00"}
    )
    assert asked[-1] == wanted


async def test_recording_no_lookup_finds_is_not_found(
    fake: FakePromptCall, conn: PromptCallConnector
) -> None:
    fake.recapi_lookups = set()
    fake.add_call(T0)
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    assert record.recording_ref is not None
    with pytest.raises(RecordingNotFound):
        await digest(conn, record.recording_ref)
    assert len([r for r in fake.requests if r.path == PROMPTCALL.REC]) == 3


async def test_revoked_key_stops_the_lookups(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    fake.add_call(T0)
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    fake.api_secret = "rotated"
    with pytest.raises(AuthenticationFailed):
        await digest(conn, str(record.recording_ref))
    assert len([r for r in fake.requests if r.path == PROMPTCALL.REC]) == 1


async def test_other_cdr_column_names_are_read(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    fake.columns = {"calldate": "start", "recordingfile": "record"}
    fake.recapi_lookups = {"filename"}
    cdr = fake.add_call(T0 + timedelta(minutes=5))
    [record] = await collect(conn, T0, T0 + timedelta(hours=1))
    assert record.started_at == cdr.start
    assert (
        cdr.audio is not None and (await digest(conn, str(record.recording_ref))).sha256 == cdr.audio.sha256()
    )


async def test_answer_without_value_is_unreadable_not_empty(
    fake: FakePromptCall, conn: PromptCallConnector
) -> None:
    spread(fake, 3, T0, timedelta(hours=1))
    fake.drop_value = 1  # {"success": true}
    with pytest.raises(UnreadableAnswer) as caught:
        await collect(conn, T0, T0 + timedelta(days=1))
    assert caught.value.field == "value"


async def test_row_without_a_time_is_unreadable(fake: FakePromptCall, conn: PromptCallConnector) -> None:
    fake.columns = {"calldate": "when"}
    fake.add_call(T0)
    with pytest.raises(UnreadableAnswer) as caught:
        await collect(conn, T0, T0 + timedelta(days=1))
    assert caught.value.field == "calldate"
