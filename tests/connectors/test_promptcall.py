"""PromptCallConnector against the fake promptCall PBX over loopback: auth, windows, audio.

What every connector must do (bad credentials, faults, streaming) is in test_contract.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.connectors.base import AuthenticationFailed, CallRecord, Direction, Outcome, UnexpectedAnswer
from service.connectors.promptcall import PromptCallConnector
from tests.connectors.kinds import PROMPTCALL, PromptCallKind
from tests.connectors.support import collect, digest
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
        recording_ref=out.uniqueid,
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
